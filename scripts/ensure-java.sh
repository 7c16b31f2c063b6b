#!/usr/bin/env bash
# Java 17+ for PySpark (`maas data prepare --engine spark`), used by `make test`: installs Debian's
# openjdk-17-jre-headless when no such Java is on PATH and apt-get can; says clearly when it cannot.
set -u
major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
v=$(major)
if [ -n "$v" ] && [ "$v" -ge 17 ]; then exit 0; fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo -n"
echo "java: no Java 17+ on PATH; trying apt-get install openjdk-17-jre-headless (a minute or two)..." >&2
log="${TMPDIR:-/tmp}/maas-apt-java.log"
{ $sudo apt-get install -y -q openjdk-17-jre-headless || { $sudo apt-get update -q && $sudo apt-get install -y -q openjdk-17-jre-headless; }; } >"$log" 2>&1
v=$(major)
if [ -z "$v" ] || [ "$v" -lt 17 ]; then
  echo "java: cannot install Java 17+ (see $log); the Spark tests will fail: install a JRE 17+ yourself" >&2
fi
exit 0
