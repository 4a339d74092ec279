#!/usr/bin/env bash
# One entry point for a fresh Debian/Ubuntu machine (run as root):
#   ./dev.sh demo   install what is needed, bring up the lab, deploy the delta cluster, show status
#   ./dev.sh demo msm  the same lab in msm mode (memcached-session-manager), with the jars of
#                   ../shared/fixtures/msm/repo (or TCSESSION_MAVEN_REPO), Tomcat 10.1 converted
#   ./dev.sh test   install what is needed, run the whole test suite (unit + lab tests);
#                   ./dev.sh test -m measure runs the measurements it leaves out
#   ./dev.sh setup  only install (apt packages, .venv); then `. .venv/bin/activate` and use `inv`
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES="python3 python3-venv mmdebstrap systemd-container iproute2 openssh-client curl tomcat-jakartaee-migration tmux"

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
    # Byte-compiled as `pip install` does for an operator (an editable install is not, and this
    # machine's environment may set PYTHONDONTWRITEBYTECODE): otherwise every command compiles
    # tcsession's modules again, about 90 ms of each start. Stale files are recompiled, not used.
    .venv/bin/python -m compileall -q tcsession >/dev/null
}

# The real memcached-session-manager jars (a Maven-layout directory; see its README) that the
# msm tests use; CI clones the project beside shared/.
MSM_FIXTURE_REPO="$PWD/../shared/fixtures/msm/repo"

demo_msm_inventory() {  # hosts.toml with [msm] maven_repo pointing at the real jars
    local repo="${TCSESSION_MAVEN_REPO:-$MSM_FIXTURE_REPO}" base="${1:-hosts.toml}" out=.cache/demo-msm/hosts.toml
    if [ "${repo#*://}" = "$repo" ]; then
        [ -d "$repo" ] || { echo "dev.sh: no MSM jars at $repo; set TCSESSION_MAVEN_REPO to a Maven-layout directory or URL" >&2; exit 1; }
        repo="$(cd "$repo" && pwd)"
    fi
    mkdir -p .cache/demo-msm
    sed -E "s|^maven_repo = .*|maven_repo = \"$repo\"|" "$base" > "$out"
    grep -q "^maven_repo = \"$repo\"" "$out" || { echo "dev.sh: $base has no [msm] maven_repo line to point at $repo" >&2; exit 1; }
    echo "$out"
}

case "${1:-}" in
    setup) setup ;;
    demo)
        setup
        if [ "${2:-}" = msm ]; then
            inv_file="$(demo_msm_inventory "${3:-hosts.toml}")"
            echo "dev.sh: msm with the jars in $(grep '^maven_repo' "$inv_file"): inventory $inv_file"
            .venv/bin/inv lab.up -i "$inv_file"
            .venv/bin/inv deploy --mode=msm -i "$inv_file"
            .venv/bin/inv status -i "$inv_file"
        else
            .venv/bin/inv lab.up
            .venv/bin/inv deploy --mode=delta
            .venv/bin/inv status
        fi
        ;;
    test)
        shift
        setup
        # the msm tests with the real jars (tests/test_msm_real.py) use the fixture repo when it is here
        if [ -z "${TCSESSION_MAVEN_REPO:-}" ] && [ -d "$MSM_FIXTURE_REPO" ]; then
            export TCSESSION_MAVEN_REPO="$(cd "$MSM_FIXTURE_REPO" && pwd)"
        fi
        # two workers (pytest-xdist): a lab test waits on its hosts much of its time; each module (and
        # the shared cluster's modules together) runs whole on one worker, with its own labs
        exec .venv/bin/python -m pytest -q --durations=40 -n "${TCSESSION_TEST_WORKERS:-2}" --dist loadgroup "$@"
        ;;
    *) echo "usage: ./dev.sh demo [msm [inventory]] | test [pytest args] | setup" >&2; exit 2 ;;
esac
