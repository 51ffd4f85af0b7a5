#!/bin/sh
# The bootloader behind a real `rauc`: RAUC's `custom` bootloader backend (system.conf
# `[handlers] bootloader-custom-backend=`), on a text env of KEY=value lines. RAUC calls it as
# get-primary, set-primary <bootname>, get-state <bootname>, set-state <bootname> good|bad.
# It keeps what RAUC's U-Boot integration keeps (BOOT_ORDER, BOOT_<x>_LEFT in hex) with that
# integration's rules, so slot_simulators.uboot_rauc_boot powers the device on from the same
# file: a slot is good when it is in BOOT_ORDER with attempts left, the primary is the first
# good one; set-primary puts the slot first with ATTEMPTS_PRIMARY attempts; set-state good
# gives it ATTEMPTS attempts; set-state bad takes it out of BOOT_ORDER with none left.
# Shell, not Python: RAUC runs it three times for every `rauc status`.
#
# Usage: rauc_bootloader.sh ENV ATTEMPTS ATTEMPTS_PRIMARY COMMAND [ARGS]
set -eu
env=$1 attempts=$2 attempts_primary=$3
shift 3

get() { sed -n "s/^$1=//p" "$env"; }

# put KEY=VALUE...: replace those variables; written to a temp file and renamed.
put() {
    tmp="$env.tmp"
    cp "$env" "$tmp"
    for pair in "$@"; do
        grep -v "^${pair%%=*}=" "$tmp" > "$tmp.1" || true
        echo "$pair" >> "$tmp.1"
        mv "$tmp.1" "$tmp"
    done
    sort "$tmp" > "$tmp.1"
    rm "$tmp"
    mv "$tmp.1" "$env"
}

good() {
    case " $(get BOOT_ORDER) " in
        *" $1 "*) left=$(get "BOOT_$1_LEFT"); [ $((0x${left:-0})) -gt 0 ] ;;
        *) return 1 ;;
    esac
}

without() {  # BOOT_ORDER without $1
    rest=""
    for b in $(get BOOT_ORDER); do [ "$b" = "$1" ] || rest="$rest $b"; done
    echo "${rest# }"
}

case "$*" in
    get-primary)
        for b in $(get BOOT_ORDER); do
            if good "$b"; then echo "$b"; exit 0; fi
        done
        echo "no bootable slot" >&2
        exit 1 ;;
    "get-state "?*)
        if good "$2"; then echo good; else echo bad; fi ;;
    "set-primary "?*)
        rest=$(without "$2")
        put "BOOT_ORDER=$2${rest:+ $rest}" "BOOT_$2_LEFT=$(printf %x "$attempts_primary")" ;;
    "set-state "?*" good")
        put "BOOT_$2_LEFT=$(printf %x "$attempts")" ;;
    "set-state "?*" bad")
        put "BOOT_ORDER=$(without "$2")" "BOOT_$2_LEFT=0" ;;
    *)
        echo "rauc_bootloader.sh: unsupported: $*" >&2
        exit 1 ;;
esac
