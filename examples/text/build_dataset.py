#!/usr/bin/env python3
"""Build the small "debian_sections" text-classification dataset.

Source: the Debian archive package lists that apt keeps under /var/lib/apt/lists
(``*_Packages*`` for Package/Section/Source/Description-md5 and
``*_i18n_Translation-en*`` for the English long descriptions). Since Debian 7
the binary ``Packages`` indices only carry the one-line synopsis; the long
description lives in ``Translation-en``, which apt only downloads when
``Acquire::Languages`` includes ``en``. So refresh the lists first with

    apt-get update -o Acquire::Languages=en

then run (stdlib only, any Python >= 3.8):

    python3 examples/text/build_dataset.py

Output (all in examples/text/): debian_sections_{train,val,calib}.jsonl with one
``{"text": str, "label": int}`` per line, labels.json (id -> section) and
DATA_CARD.md (provenance, licence note, counts, sha256s).

The output JSONL is a deterministic function of the apt lists content and SEED:
records are sorted before a seeded shuffle, no hash-order or clock dependence.
"""
from __future__ import annotations

import argparse
import collections
import datetime as _dt
import glob
import gzip
import hashlib
import json
import lzma
import os
import random
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LISTS_DIR = "/var/lib/apt/lists"
SOURCES_DIR = "/etc/apt/sources.list.d"

# Semantically distinct, plentiful sections of bookworm/main (after filtering,
# one package per source package): games 752, graphics 379, net 1223,
# science 1235, sound 627.  Label ids = alphabetical order.
SECTIONS = ["games", "graphics", "net", "science", "sound"]
SEED = 20250520
N_VAL, N_CALIB, N_TRAIN = 60, 32, 250  # per class; the three splits are disjoint
MAX_CHARS = 400
MIN_CHARS = 60

# Binary packages whose description is normally derived from a sibling package.
DERIVED_NAME = re.compile(
    r"-(dbg|dbgsym|doc|docs|dev|data|common|examples|tests?|l10n|i18n|locales?|"
    r"dbg-\w+|plugins?-dev)$"
)
DERIVED_SYNOPSIS = re.compile(
    r"transitional|dummy package|metapackage|meta-package|debug(ging)? symbols|"
    r"\(documentation\)|documentation for|\(data files?\)|\(common files?\)|"
    r"\(development files?\)|development files for",
    re.I,
)


def read_list(path: str) -> str:
    """Return the decompressed text of one apt list file."""
    helper = "/usr/lib/apt/apt-helper"
    if path.endswith(".lz4") or (path.endswith(".zst")):
        if os.path.exists(helper):
            out = subprocess.run([helper, "cat-file", path], check=True, capture_output=True)
            return out.stdout.decode("utf-8")
        tool = "lz4" if path.endswith(".lz4") else "zstd"
        if shutil.which(tool):
            out = subprocess.run([tool, "-dc", path], check=True, capture_output=True)
            return out.stdout.decode("utf-8")
        raise SystemExit(f"need apt-helper or {tool} to read {path}")
    if path.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    if path.endswith(".xz"):
        with lzma.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def parse_deb822(text: str):
    """Yield dicts of field -> value (continuation lines kept, joined by \\n)."""
    for block in text.split("\n\n"):
        rec: dict[str, str] = {}
        key = None
        for line in block.split("\n"):
            if not line:
                continue
            if line[0] in " \t":
                if key is not None:
                    rec[key] += "\n" + line
            else:
                key, _, val = line.partition(":")
                rec[key] = val.strip()
        if rec:
            yield rec


def clean_description(desc: str) -> tuple[str, str]:
    """Split a Description value into (synopsis, cleaned long description)."""
    lines = desc.split("\n")
    synopsis = lines[0].strip()
    body = []
    for line in lines[1:]:
        s = line.strip()
        if s == "." or not s:
            continue  # paragraph separator / formatting line
        s = re.sub(r"^[*+\-o\u2022]\s+", "", s)  # list bullets
        body.append(s)
    long = re.sub(r"\s+", " ", " ".join(body)).strip()
    return synopsis, long


def make_text(synopsis: str, long: str) -> str:
    syn = synopsis.rstrip(".")
    text = f"{syn[:1].upper()}{syn[1:]}. {long}".strip() if long else syn
    text = re.sub(r"\s+", " ", text)
    if len(text) > MAX_CHARS:
        cut = text[:MAX_CHARS]
        sp = cut.rfind(" ")
        text = cut[: sp if sp > MAX_CHARS // 2 else MAX_CHARS].rstrip(" ,;:")
    return text


def list_files(pattern: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(LISTS_DIR, pattern)))
    # one file per index, preferring the least compressed form apt kept
    seen, out = set(), []
    for f in files:
        base = re.sub(r"\.(lz4|gz|xz|zst)$", "", f)
        if base not in seen:
            seen.add(base)
            out.append(f)
    return out


def collect():
    pkg_files = list_files("*_binary-*_Packages*")
    tr_files = list_files("*_i18n_Translation-en*")
    if not pkg_files:
        raise SystemExit(f"no *_Packages lists in {LISTS_DIR}; run apt-get update")
    if not tr_files:
        raise SystemExit("no Translation-en lists; run: apt-get update -o Acquire::Languages=en")

    long_by_md5: dict[str, str] = {}
    for f in tr_files:
        for rec in parse_deb822(read_list(f)):
            md5 = rec.get("Description-md5")
            if md5 and "Description-en" in rec:
                long_by_md5.setdefault(md5, rec["Description-en"])

    packages: dict[str, dict] = {}
    for f in pkg_files:  # sorted order; the first occurrence of a package wins
        for rec in parse_deb822(read_list(f)):
            name = rec.get("Package")
            if name and name not in packages:
                packages[name] = rec

    stats = collections.Counter()
    by_source: dict[tuple[str, str], list[tuple[str, str]]] = collections.defaultdict(list)
    for name in sorted(packages):
        rec = packages[name]
        section = rec.get("Section", "").split("/")[-1]  # strip contrib/, non-free/
        if section not in SECTIONS:
            continue
        stats[f"{section}:all"] += 1
        desc = rec.get("Description", "")
        if "\n" not in desc:  # synopsis only -> long text from Translation-en
            desc = long_by_md5.get(rec.get("Description-md5", ""), desc)
        synopsis, long = clean_description(desc)
        if DERIVED_NAME.search(name) or DERIVED_SYNOPSIS.search(synopsis):
            stats[f"{section}:derived"] += 1
            continue
        text = make_text(synopsis, long)
        if len(text) < MIN_CHARS:
            stats[f"{section}:short"] += 1
            continue
        source = rec.get("Source", name).split()[0]
        by_source[(section, source)].append((name, text))

    # One binary package per source package: siblings share most of their text
    # and would leak between splits. Prefer the binary named like the source.
    chosen: list[tuple[str, str, str]] = []
    for (section, source), cands in sorted(by_source.items()):
        cands.sort(key=lambda nt: (nt[0] != source, len(nt[0]), nt[0]))
        chosen.append((section, cands[0][0], cands[0][1]))

    # Drop texts that occur more than once (exact duplicate after lower-casing).
    norm = collections.Counter(t.lower() for _, _, t in chosen)
    per_class: dict[str, list[tuple[str, str]]] = {s: [] for s in SECTIONS}
    for section, name, text in chosen:
        if norm[text.lower()] > 1:
            stats[f"{section}:duplicate"] += 1
            continue
        per_class[section].append((name, text))
    return per_class, stats, pkg_files, tr_files


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_jsonl(path: str, rows) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for text, label in rows:
            f.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")


def apt_sources() -> str:
    parts = []
    for f in sorted(glob.glob(os.path.join(SOURCES_DIR, "*.sources")) + glob.glob(os.path.join(SOURCES_DIR, "*.list"))):
        with open(f, encoding="utf-8") as fh:
            lines = [l.rstrip() for l in fh if not l.startswith("#")]
        parts.append(f"# {f}\n" + "\n".join(lines).strip())
    return "\n\n".join(parts)


def release_dates(files) -> list[str]:
    out = []
    for f in sorted(set(re.sub(r"_(main|contrib|non-free(-firmware)?)_.*$", "_InRelease", os.path.basename(p)) for p in files)):
        p = os.path.join(LISTS_DIR, f)
        if not os.path.exists(p):
            continue
        with open(p, encoding="utf-8", errors="replace") as fh:
            head = fh.read(8192)
        fields = {k: (m.group(1).strip() if (m := re.search(rf"^{k}:(.*)$", head, re.M)) else None)
                  for k in ("Suite", "Codename", "Version", "Date")}
        out.append(f"{f}: Suite {fields.get('Suite')}, Codename {fields.get('Codename')}, "
                   f"Version {fields.get('Version', '-')}, Date {fields.get('Date')}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=HERE)
    ap.add_argument("--built-date", default=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
                    help="date written to DATA_CARD.md (does not affect the data)")
    args = ap.parse_args()

    per_class, stats, pkg_files, tr_files = collect()
    n_avail = {s: len(per_class[s]) for s in SECTIONS}
    n_per_class = min(min(n_avail.values()), N_VAL + N_CALIB + N_TRAIN)
    if n_per_class < N_VAL + N_CALIB + 50:
        raise SystemExit(f"too few examples per class: {n_avail}")

    rng = random.Random(SEED)
    splits = {"train": [], "val": [], "calib": []}
    for label, section in enumerate(SECTIONS):
        items = sorted(per_class[section])
        rng.shuffle(items)
        items = items[:n_per_class]
        splits["val"] += [(t, label) for _, t in items[:N_VAL]]
        splits["calib"] += [(t, label) for _, t in items[N_VAL:N_VAL + N_CALIB]]
        splits["train"] += [(t, label) for _, t in items[N_VAL + N_CALIB:N_VAL + N_CALIB + N_TRAIN]]
    for rows in splits.values():
        rng.shuffle(rows)

    os.makedirs(args.out_dir, exist_ok=True)
    paths = {}
    for split, rows in splits.items():
        paths[split] = os.path.join(args.out_dir, f"debian_sections_{split}.jsonl")
        write_jsonl(paths[split], rows)
    labels_path = os.path.join(args.out_dir, "labels.json")
    with open(labels_path, "w", encoding="utf-8", newline="\n") as f:
        json.dump({str(i): s for i, s in enumerate(SECTIONS)}, f, indent=2)
        f.write("\n")

    counts = {split: collections.Counter(l for _, l in rows) for split, rows in splits.items()}
    for split, rows in splits.items():
        print(f"{split}: {len(rows)} rows  " + ", ".join(f"{SECTIONS[l]}={c}" for l, c in sorted(counts[split].items())))

    write_card(args, paths, labels_path, counts, n_avail, stats, pkg_files, tr_files)


def write_card(args, paths, labels_path, counts, n_avail, stats, pkg_files, tr_files) -> None:
    files = [paths["train"], paths["val"], paths["calib"], labels_path]
    rows = "\n".join(
        f"| {i} | {s} | {n_avail[s]} | {counts['train'][i]} | {counts['val'][i]} | {counts['calib'][i]} |"
        for i, s in enumerate(SECTIONS)
    )
    tot = lambda sp: sum(counts[sp].values())  # noqa: E731
    filt = "\n".join(
        f"| {s} | {stats[s + ':all']} | {stats[s + ':derived']} | {stats[s + ':short']} | {stats[s + ':duplicate']} |"
        for s in SECTIONS
    )
    inputs = "\n".join(f"- `{os.path.basename(p)}` sha256 `{sha256(p)}`" for p in pkg_files + tr_files)
    shas = "\n".join(f"| `{os.path.basename(p)}` | {os.path.getsize(p)} | `{sha256(p)}` |" for p in files)
    card = f"""# Data card: debian_sections

Small, real, labelled English text-classification dataset: Debian package
descriptions labelled by the package's archive `Section`. Used by edgekit's
text examples (fine-tuning MiniLM, INT8 calibration, accuracy checks).
**Evaluation / demo use only**; not a benchmark.

## Source

Debian archive metadata (binary package indices), as fetched by apt on the
build machine into `/var/lib/apt/lists`, architecture amd64, component `main`.
apt sources (`/etc/apt/sources.list.d/*.sources|*.list`, comments removed;
disabled third-party lists are not read by apt and not used):

```
{apt_sources()}
```

Release files of the indices used:

{chr(10).join('- ' + r for r in release_dates(pkg_files))}

Input index files (sha256 of the files as stored by apt):

{inputs}

Fields used: `Package`, `Source`, `Section` and `Description-md5` from the
`Packages` indices; `Description-en` (synopsis + long description) from the
`Translation-en` indices (the `Packages` indices carry only the synopsis).
Dataset built {args.built_date}.

## Licence

The texts are package descriptions from the Debian archive metadata. Each
description is written by that package's maintainers / upstream authors and is
distributed with the package (in its `debian/control`) under that package's
licence; there is no single licence for the whole set. All packages come from
Debian `main`, so each is free software under the Debian Free Software
Guidelines (DFSG, see https://www.debian.org/social_contract#guidelines and the
Debian Policy Manual, "The Debian Archive"). The descriptions are reproduced
here, shortened, only as short factual text samples for evaluating and
demonstrating classifiers. Redistributors should treat each line as carrying the
licence of the package it describes (the package can be found from the text via
`apt-cache search` / packages.debian.org). Section names are Debian archive
metadata.

## How it was built

```
apt-get update -o Acquire::Languages=en   # fetch Packages + Translation-en
python3 examples/text/build_dataset.py    # stdlib only; deterministic
```

`build_dataset.py` (seed {SEED}):

1. Reads every `*_binary-*_Packages*` and `*_i18n_Translation-en*` list; a
   package's first occurrence (sorted file order) wins. `contrib/`/`non-free/`
   prefixes are stripped from `Section`.
2. Keeps sections {', '.join(SECTIONS)} (distinct topics, each with enough
   independent packages; near-duplicate pairs such as libs/libdevel and
   language-ecosystem sections were avoided).
3. Drops derivative packages: names ending `-dbg`, `-doc`, `-dev`, `-data`,
   `-common`, `-examples`, `-tests`, `-l10n`, ...; synopses mentioning
   transitional / dummy / metapackage / debug symbols / documentation /
   data files / development files; texts shorter than {MIN_CHARS} characters.
4. Keeps one binary package per source package (the one named like the source,
   else the shortest name), so sibling packages with shared text cannot leak
   across splits; then drops any text occurring more than once.
5. Text = synopsis + ". " + long description, with formatting lines (` .`),
   bullets and line breaks removed, whitespace collapsed, truncated at a word
   boundary to <= {MAX_CHARS} characters.
6. Per class: sort by package name, seeded shuffle, take {N_VAL} val, {N_CALIB}
   calib, up to {N_TRAIN} train (disjoint); each split is then shuffled.

Filtering (packages in section / dropped as derivative / too short / duplicate text):

| section | packages | derivative | short | duplicate |
|---|---|---|---|---|
{filt}

## Classes and counts

| label | section | available after filtering | train | val | calib |
|---|---|---|---|---|---|
{rows}
| | **total** | | {tot('train')} | {tot('val')} | {tot('calib')} |

Format: JSON Lines, one `{{"text": str, "label": int}}` per line, UTF-8;
`labels.json` maps label id (string) to section name.

## Files

| file | bytes | sha256 |
|---|---|---|
{shas}

## Caveats

- The `Section` is assigned by maintainers and is sometimes debatable (e.g. a
  plotting tool in `science` vs `graphics`, a network audio player in `sound`
  vs `net`), so 100% accuracy is not attainable; expect some label noise.
- Descriptions may contain project names that strongly hint at the class.
- English only; texts are truncated to {MAX_CHARS} characters.
"""
    with open(os.path.join(args.out_dir, "DATA_CARD.md"), "w", encoding="utf-8", newline="\n") as f:
        f.write(card)


if __name__ == "__main__":
    sys.exit(main())
