"""Are two runs' numbers bitwise equal? For refactors: `results.json` before and after.

    python scripts/same_numbers.py [--allow-new] BEFORE/results.json AFTER/results.json

Compares `metrics`, `curves`, `baselines` and every `history` value exactly
(JSON floats round-trip, so equal text is equal bits), except wall times
(`*seconds`), which are never the same twice. Exit status 1 on any difference;
with `--allow-new`, numbers only the after-run has (e.g. a new baseline) are
listed but are not differences: every number the before-run had must be equal.
"""

import json
import sys


def differences(a: dict, b: dict, allow_new: bool = False) -> list[str]:
  timeless = lambda keys: {k for k in keys if not k.endswith("seconds")}
  out = []
  for sec in ("metrics", "curves", "baselines"):
    ka, kb = timeless(a.get(sec, {})), timeless(b.get(sec, {}))
    out += [f"{sec}: {k} only before" for k in sorted(ka - kb)]
    if not allow_new:
      out += [f"{sec}: {k} only after" for k in sorted(kb - ka)]
    out += [f"{sec}: {k} {a[sec][k]!r} != {b[sec][k]!r}" for k in sorted(ka & kb)
            if a[sec][k] != b[sec][k]]
  ha = {r["step"]: r for r in a.get("history", [])}
  hb = {r["step"]: r for r in b.get("history", [])}
  if set(ha) != set(hb):
    out.append(f"history steps {sorted(ha)} != {sorted(hb)}")
  for s in sorted(set(ha) & set(hb)):
    for k in sorted(timeless(ha[s])):
      if k not in hb[s]:
        out.append(f"history step {s}: {k} only before")
      elif hb[s][k] != ha[s][k]:
        out.append(f"history step {s}: {k} {ha[s][k]!r} != {hb[s][k]!r}")
  for k in ("n_query", "n_archive", "n_train", "seed", "bits", "k", "n", "bands"):
    if a.get(k) != b.get(k):
      out.append(f"{k}: {a.get(k)!r} != {b.get(k)!r}")
  return out


def main(argv):
  if any(x in ("-h", "--help") for x in argv[1:]):
    print(__doc__)
    return 0
  allow_new = "--allow-new" in argv
  argv = [x for x in argv if x != "--allow-new"]
  if len(argv) != 3:
    print(__doc__, file=sys.stderr)
    print("error: expected two results.json paths", file=sys.stderr)
    return 2
  try:
    a, b = (json.loads(open(p).read()) for p in argv[1:])
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  diff = differences(a, b, allow_new)
  new = [f"{sec}: {k}" for sec in ("metrics", "curves", "baselines")
         for k in sorted(set(b.get(sec, {})) - set(a.get(sec, {})))]
  print("\n".join(diff) if diff else
        f"identical: {len(a['metrics'])} metrics, {len(a.get('history', []))} history rows"
        + (f"; new after: {', '.join(new)}" if allow_new and new else ""))
  return 1 if diff else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
