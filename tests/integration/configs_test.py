#!/usr/bin/python3
"""Checks configs/*/{extract,train}.ini against the tools' typed config structs.

Every key must be a field of ExtractConfig (extract/extract_config.h) or
TrainConfig (train/train_config.h) with '_' written as '-' (the flag names);
every line must be `key = value` or a comment; values of integer fields must be
integers. This is a static check: the test that loads each file with the real
tool (`--config`) belongs with the tools.
"""
import glob
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def struct_fields(header, struct):
    text = open(os.path.join(ROOT, header)).read()
    body = text[text.index(f"struct {struct} {{"):]
    body = body[:body.index("\n};")]
    fields = {}
    for m in re.finditer(r"^\s+([\w:]+)\s+(\w+)\s*=", body, re.M):
        fields[m.group(2).replace("_", "-")] = m.group(1)
    return fields


def main():
    tools = {"extract.ini": struct_fields("extract/extract_config.h", "ExtractConfig"),
             "train.ini": struct_fields("train/train_config.h", "TrainConfig")}
    errors, files = [], 0
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*", "*.ini"))):
        name = os.path.basename(path)
        rel = os.path.relpath(path, ROOT)
        if name not in tools:
            errors.append(f"{rel}: unexpected file (expected extract.ini or train.ini)")
            continue
        files += 1
        fields, seen = tools[name], set()
        text = open(path).read()
        if not text.startswith("#") or "Table" not in text.split("\n", 2)[1]:
            errors.append(f"{rel}: the opening comment must name the paper's table")
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            m = re.fullmatch(r"([a-z0-9-]+) = (\S+)", line)
            if not m:
                errors.append(f"{rel}:{n}: expected 'key = value', got {line!r}")
                continue
            key, value = m.groups()
            if key not in fields:
                errors.append(f"{rel}:{n}: '{key}' is not a field of the tool's config struct")
            elif key in seen:
                errors.append(f"{rel}:{n}: '{key}' given twice")
            elif "int" in fields[key] and not re.fullmatch(r"-?\d+", value):
                errors.append(f"{rel}:{n}: '{key}' needs an integer, got '{value}'")
            seen.add(key)
    if files < 32:
        errors.append(f"only {files} config files found, expected 16 experiments x 2")
    for e in errors:
        print("FAIL:", e, file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"PASS: {files} config files, every key a field of its tool's config struct")


if __name__ == "__main__":
    main()
