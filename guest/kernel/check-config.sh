#!/usr/bin/env bash
# check-config.sh CONFIG FRAGMENT...: every line of the fragments must have
# survived into CONFIG. Later fragments override earlier ones, symbol by symbol.
set -euo pipefail
config=$1
shift
awk '
    FNR == NR { have[$0] = 1; if (match($0, /^CONFIG_[A-Za-z0-9_]+=/)) set[substr($0, 1, RLENGTH - 1)] = 1; next }
    /^CONFIG_[A-Za-z0-9_]+=/ { split($0, kv, "="); want[kv[1]] = $0; next }
    /^# CONFIG_[A-Za-z0-9_]+ is not set/ { want[$2] = "unset"; next }
    END {
        bad = 0
        for (sym in want) {
            w = want[sym]
            if (w == "unset") {
                if (sym in set && !((sym "=n") in have)) { print "config: " sym " should be unset but is on"; bad = 1 }
            } else if (!(w in have)) {
                print "config: wanted " w " but it did not survive (a dependency is missing?)"; bad = 1
            }
        }
        exit bad
    }
' "$config" "$@"
