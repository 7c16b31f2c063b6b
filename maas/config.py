"""Settings read once from the environment (MAAS_*) and command-line flags."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Process-wide settings; every field can be set as MAAS_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="MAAS_", extra="ignore")

    home: Path = Path.home() / ".maas"
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    max_num_seqs: int = 32
    max_model_len: int = 2048
    kv_cache_tokens: int = 0  # 0: max_num_seqs * max_model_len, capped by memory
    max_num_batched_tokens: int = 256
    block_size: int = 16
    threads: int = 0  # 0: torch default
    log_level: str = "info"
    api_keys: str = ""  # comma-separated keys accepted on /v1 (MAAS_API_KEYS)
    admin_api_keys: str = ""  # comma-separated keys also accepted on /admin (MAAS_ADMIN_API_KEYS)
    auto_import_builtins: bool = True  # import the built-in models into the registry at first use


def get_settings() -> Settings:
    """Return settings read from the environment."""
    return Settings()
