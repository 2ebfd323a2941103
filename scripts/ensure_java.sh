#!/usr/bin/env bash
# Makes sure Java 17+ is there for the Spark tests (Spark 4 needs it): installs
# openjdk-17-jre-headless with apt where it is missing and apt is available.
set -uo pipefail
major() { "$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.\([0-9]*\)\)\{0,1\}.*/\1 \3/p' | head -1 | awk '{ print ($1 == 1) ? $2 : $1 }'; }
java_bin=${JAVA_HOME:+$JAVA_HOME/bin/java}
java_bin=${java_bin:-$(command -v java || true)}
if [ -n "$java_bin" ] && [ -x "$java_bin" ] && [ "$(major "$java_bin")" -ge 17 ] 2>/dev/null; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  echo "Java 17+ not found: installing openjdk-17-jre-headless" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null \
    || echo "warning: could not install Java 17; the Spark tests will be skipped" >&2
else
  echo "warning: Java 17+ not found and apt is unavailable; the Spark tests will be skipped" >&2
fi
exit 0
