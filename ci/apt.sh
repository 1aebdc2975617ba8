# Sourced by the ci/ scripts that install Debian packages.
# apt_install_missing NAME PKG...: installs the PKGs that are not installed yet (quiet and
# quick when all are), saying so on stderr as NAME.
apt_install_missing() {
  local name=$1 p
  shift
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "$name: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
