# Shared by scripts/test and scripts/demo (sourced, not run).
# shellcheck shell=bash

if [[ -t 2 ]]; then _b=$'\033[1m' _y=$'\033[1;33m' _r=$'\033[1;31m' _0=$'\033[0m'; else _b="" _y="" _r="" _0=""; fi
say() { printf '%s==> %s%s\n' "$_b" "$*" "$_0" >&2; }
warn() { printf '%s!!! %s%s\n' "$_y" "$*" "$_0" >&2; }
die() { printf '%sERROR: %s%s\n' "$_r" "$*" "$_0" >&2; exit 1; }

# ensure_apt_packages CMD:PACKAGES ... -- installs PACKAGES (Debian; several separated by
# spaces) when CMD is not on PATH.
# A CMD starting with "py:" names a Python module instead (py:ensurepip:python3-venv).
# Skipped with REDISQ_NO_APT=1; needs root otherwise.
ensure_apt_packages() {
    local missing=() spec cmd pkgs
    for spec in "$@"; do
        cmd=${spec%:*}
        read -r -a pkgs <<<"${spec##*:}"
        if [[ $cmd == py:* ]]; then
            python3 -c "import ${cmd#py:}" >/dev/null 2>&1 || missing+=("${pkgs[@]}")
        else
            command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkgs[@]}")
        fi
    done
    ((${#missing[@]})) || return 0
    if [[ ${REDISQ_NO_APT:-} == 1 ]]; then
        warn "REDISQ_NO_APT=1: not installing missing Debian packages: ${missing[*]}"
        return 0
    fi
    if [[ $(id -u) != 0 ]]; then
        die "missing Debian packages: ${missing[*]}
       Install them as root:  apt-get update && apt-get install -y ${missing[*]}
       (or set REDISQ_NO_APT=1 to go on without them)"
    fi
    command -v apt-get >/dev/null 2>&1 \
        || die "missing packages (${missing[*]}) and no apt-get here: install them by hand"
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
}

# make_venv DIR -- a venv made with python3 (recreated if a previous attempt left it broken).
make_venv() {
    local dir=$1
    if [[ ! -x $dir/bin/python ]] || ! "$dir/bin/python" -c 'import pip' >/dev/null 2>&1; then
        say "creating $dir"
        python3 -m venv --clear "$dir"
    fi
}
