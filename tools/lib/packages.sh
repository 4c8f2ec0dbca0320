# Sourced by the tools: `need WHO PROGRAM:PACKAGE...` installs, with apt on
# Debian, the package of each program that is missing. WHO names the caller
# in its messages. One place, so that the tools agree on how.
need() {
    local who=$1 c missing=()
    shift
    for c in "$@"; do
        command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "$who: ${missing[*]} missing and not root; install them or run as root" >&2
        return 1
    fi
    echo "== installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer before it asks.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
