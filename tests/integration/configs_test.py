#!/usr/bin/python3
"""Checks configs/*/{extract,train}.ini statically and with the real tools.

Static: every key must be a field of ExtractConfig (extract/extract_config.h,
including the ViewSettings it embeds, extract/view_settings.h) or TrainConfig
(train/train_config.h) with '_' written as '-' (the flag names);
every line must be `key = value` or a comment; values of integer fields must be
integers.

With --bin DIR (the build's bin/): each extract.ini is loaded by evl_extract and
each train.ini by evl_train_head as a dry run (`--config FILE --print-config`),
which parses the file exactly like a real run (an unknown key or a malformed
value exits 2) and prints the resolved options; the test asserts exit 0 and
that every value in the file is the value the tool resolved. As a control that
the tools do refuse a wrong file, evl_train_head must reject an extract.ini.
"""
import argparse
import glob
import os
import re
import subprocess
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


def parse_ini(text):
    """`key = value` lines of the top-level section (what --print-config prints)."""
    values, section = {}, ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]") + "."
            continue
        key, sep, value = line.partition("=")
        if sep:
            values[section + key.strip()] = value.strip()
    return values


def same_value(expected, got):
    if expected == got:
        return True
    try:  # 4e-4 is printed back as 0.0004
        return float(expected) == float(got)
    except ValueError:
        return False


def dry_run(tool, path):
    return subprocess.run([tool, "--config", path, "--print-config"], capture_output=True,
                          text=True, timeout=60)


def check_with_tools(bin_dir, errors):
    tools = {"extract.ini": os.path.join(bin_dir, "evl_extract"),
             "train.ini": os.path.join(bin_dir, "evl_train_head")}
    for exe in tools.values():
        if not os.access(exe, os.X_OK):
            errors.append(f"{exe}: not built (targets evl_extract_bin, evl_train_head_bin)")
            return 0
    runs = 0
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*", "*.ini"))):
        name = os.path.basename(path)
        if name not in tools:
            continue
        rel = os.path.relpath(path, ROOT)
        exe = tools[name]
        r = dry_run(exe, path)
        runs += 1
        if r.returncode != 0:
            errors.append(f"{rel}: {os.path.basename(exe)} --print-config exited {r.returncode}: "
                          f"{r.stderr.strip()}")
            continue
        if not r.stdout.startswith("# resolved configuration"):
            errors.append(f"{rel}: unexpected --print-config output {r.stdout[:200]!r}")
            continue
        resolved = parse_ini(r.stdout)
        for key, value in parse_ini(open(path).read()).items():
            if key not in resolved:
                errors.append(f"{rel}: '{key}' missing from the resolved config of "
                              f"{os.path.basename(exe)}")
            elif not same_value(value, resolved[key]):
                errors.append(f"{rel}: '{key}' = '{value}' in the file, but "
                              f"{os.path.basename(exe)} resolved '{resolved[key]}'")
    # Control: a file meant for another tool is refused with exit 2, naming the file.
    wrong = os.path.join(ROOT, "configs", "k400_b16_8x16", "extract.ini")
    r = dry_run(tools["train.ini"], wrong)
    if r.returncode != 2 or wrong not in r.stderr:
        errors.append(f"evl_train_head accepted {wrong} (exit {r.returncode}, stderr "
                      f"{r.stderr.strip()!r}); expected exit 2 naming the file")
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", help="directory of evl_extract and evl_train_head (dry runs)")
    args = ap.parse_args()
    extract_fields = struct_fields("extract/extract_config.h", "ExtractConfig")
    extract_fields.update(struct_fields("extract/view_settings.h", "ViewSettings"))
    tools = {"extract.ini": extract_fields,
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
    runs = check_with_tools(args.bin, errors) if args.bin else 0
    for e in errors:
        print("FAIL:", e, file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"PASS: {files} config files, every key a field of its tool's config struct")
    if args.bin:
        print(f"PASS: {runs} dry runs (evl_extract / evl_train_head --config FILE --print-config) "
              "resolved every value of their file")


if __name__ == "__main__":
    main()
