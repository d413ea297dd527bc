#!/usr/bin/env bash
# Checks that the build is reproducible: builds every jar twice from clean (each jar entry gets
# project.build.outputTimestamp from the pom) and compares them byte for byte.
#
#   scripts/check-reproducible.sh            # the library, sources, javadoc and CLI jars
#   scripts/check-reproducible.sh -Pcuda     # also the linux-x86_64 natives jar (nvcc and cmake needed)
#
# Extra arguments go to Maven (-o for offline). Both builds run `mvn clean`: target/ is rebuilt twice.
set -euo pipefail
cd "$(dirname "$0")/.."

first=$(mktemp -d)
trap 'rm -rf "$first"' EXIT
build() {
  mvn -q -B "$@" -DskipTests clean package
}

build "$@"
cp target/*.jar "$first/"
build "$@"

status=0
for jar in "$first"/*.jar; do
  name=$(basename "$jar")
  if [[ ! -f target/$name ]]; then
    echo "check-reproducible: $name was built only the first time" >&2
    status=1
  elif cmp -s "$jar" "target/$name"; then
    echo "check-reproducible: $name identical ($(sha256sum < "$jar" | cut -c1-16))"
  else
    echo "check-reproducible: $name differs between two builds" >&2
    status=1
  fi
done
exit $status
