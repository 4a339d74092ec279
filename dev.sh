#!/usr/bin/env bash
# One entry point for a fresh Debian/Ubuntu machine (run as root):
#   ./dev.sh demo   install what is needed, bring up the lab, deploy the delta cluster, show status
#   ./dev.sh test   install what is needed, run the whole test suite (unit + lab tests)
#   ./dev.sh setup  only install (apt packages, .venv); then `. .venv/bin/activate` and use `inv`
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES="python3 python3-venv mmdebstrap systemd-container iproute2 openssh-client curl tomcat-jakartaee-migration"

setup() {
    if [ "$(id -u)" != 0 ]; then
        echo "dev.sh: run as root (the lab creates a bridge, mounts and containers)" >&2; exit 1
    fi
    missing=""
    for p in $APT_PACKAGES; do
        dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "dev.sh: installing$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
    python3 -m venv --help >/dev/null 2>&1 || { echo "dev.sh: python3 has no venv module" >&2; exit 1; }
    command -v javac >/dev/null 2>&1 || {
        echo "dev.sh: installing a JDK (tests compile the test page with Tomcat's JSP compiler)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jdk-headless >/dev/null; }
    # Real tools the unit tests run, unpacked (not installed) into .cache/tools: nginx for
    # `nginx -t` on the rendered site, Tomcat 9/10.1's Jasper to compile the test page.
    tools=.cache/tools
    if [ ! -f "$tools/.complete" ]; then
        rm -rf "$tools"; mkdir -p "$tools/debs"
        (cd "$tools/debs" && apt-get download nginx-light nginx libtomcat10-java libtomcat9-java ant >/dev/null 2>&1) || {
            apt-get update -qq; (cd "$tools/debs" && apt-get download nginx-light nginx libtomcat10-java libtomcat9-java ant >/dev/null); }
        for d in "$tools"/debs/*.deb; do dpkg -x "$d" "$tools/root"; done
        touch "$tools/.complete"
    fi
    export TCSESSION_NGINX="$PWD/$tools/root/usr/sbin/nginx"
    export TCSESSION_JASPER_DIR="$PWD/$tools/root/usr/share/java"
    stamp=.venv/.tcsession-installed
    if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt "$stamp" ]; then
        python3 -m venv .venv
        .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
        touch "$stamp"
    fi
}

case "${1:-}" in
    setup) setup ;;
    demo)
        setup
        .venv/bin/inv lab.up
        .venv/bin/inv deploy --mode=delta
        .venv/bin/inv status
        ;;
    test)
        shift
        setup
        exec .venv/bin/python -m pytest -q "$@"
        ;;
    *) echo "usage: ./dev.sh demo | test [pytest args] | setup" >&2; exit 2 ;;
esac
