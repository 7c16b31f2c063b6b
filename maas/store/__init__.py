"""Where models live: built-in defaults now; the registry (blobs, catalog) grows here."""
