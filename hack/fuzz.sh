#!/usr/bin/env bash
# `make fuzz`: runs every Go fuzz target in the module for FUZZTIME each
# (default 30s). Their seed corpora (f.Add and testdata/fuzz) also run in the
# normal test suite; this explores beyond them. A failure leaves its input in
# the package's testdata/fuzz, to be committed with the fix.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fuzztime=${FUZZTIME:-30s}
failed=0
while IFS=: read -r file fn; do
	pkg="./$(dirname "$file")"
	echo "fuzz.sh: $fn in $pkg for $fuzztime"
	if ! go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime" "$pkg"; then
		failed=1
	fi
done < <(git ls-files -co --exclude-standard '*_test.go' | xargs grep -Ho '^func Fuzz[A-Za-z0-9_]*' | sed 's/func //')
exit "$failed"
