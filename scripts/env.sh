# Sourced by scripts/test.sh and scripts/demo.sh: create ./.venv on first use, install
# requirements-dev.txt into it (again only when that file or requirements.txt changes),
# and activate it.  Set FT_PYTHON to use another interpreter for the venv, or
# FT_NO_VENV=1 to use the current environment as it is.
if [ "${FT_NO_VENV:-0}" != 1 ]; then
    _repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    _venv="$_repo/.venv"
    _stamp="$_venv/.requirements.sha1"
    _want=$(cat "$_repo/requirements.txt" "$_repo/requirements-dev.txt" | sha1sum | cut -d' ' -f1)
    if [ ! -x "$_venv/bin/python" ]; then
        echo "creating $_venv" >&2
        "${FT_PYTHON:-python3}" -m venv "$_venv" || return 1
    fi
    if [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
        echo "installing requirements into $_venv (PyTorch takes a minute)" >&2
        "$_venv/bin/python" -m pip install -q --upgrade pip >&2 || return 1
        "$_venv/bin/python" -m pip install -q -r "$_repo/requirements-dev.txt" >&2 || return 1
        echo "$_want" > "$_stamp"
    fi
    # shellcheck disable=SC1091
    . "$_venv/bin/activate"
fi
