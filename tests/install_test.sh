#!/usr/bin/env bash
# make install into a temporary DESTDIR, then the installed binary, run from an empty folder with no
# PATHFORMER_HOME, writes a report whose plotting libraries it found under share/pathformer;
# --version's version has its release notes; make uninstall removes every installed file.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
cd "$root"
# -o pathformer: install the binary this check built, whatever flags built it
make --no-print-directory -s -o pathformer install DESTDIR="$dest" PREFIX=/opt/pf >/dev/null
bin="$dest/opt/pf/bin/pathformer"
test -x "$bin"
test -f "$dest/opt/pf/share/pathformer/node_modules/vega-lite/build/vega-lite.min.js"
test -f "$dest/opt/pf/share/doc/pathformer/LICENSE"
mkdir "$dest/work"
cd "$dest/work"
env -u PATHFORMER_HOME PATH=/usr/bin:/bin "$bin" run --preset tiny --out run --quiet 2>err || { cat err; exit 1; }
test ! -s err || { echo "install test: --quiet printed:"; cat err; exit 1; }
grep -q "vega-lite" run/report.html || { echo "install test: report.html lacks the inlined libraries"; exit 1; }
version=$("$bin" --version | head -1 | cut -d' ' -f2)
grep -q "^## $version\$" "$root/RELEASE-NOTES.md" || { echo "install test: no release notes for $version"; exit 1; }
cd "$root"
make --no-print-directory -s -o pathformer uninstall DESTDIR="$dest" PREFIX=/opt/pf >/dev/null
left=$(find "$dest/opt" -type f | wc -l)
test "$left" -eq 0 || { echo "install test: uninstall left $left files"; find "$dest/opt" -type f; exit 1; }
echo "install test: installed, wrote a report from $dest/work, uninstalled"
