# Sourced by the plot scripts: `plot_start USAGE "$@"` checks for exactly two
# arguments (an input file and the PNG to write), that the input is a non-empty
# file and that gnuplot is installed; it sets $in, $out and $tmp (a scratch
# folder removed on exit). Usage errors exit 2, missing input or gnuplot 1.
plot_start() {
  local usage=$1
  shift
  if [ $# -ne 2 ]; then
    echo "usage: $0 $usage" >&2
    exit 2
  fi
  in=$1 out=$2
  [ -s "$in" ] || { echo "error: '$in': missing or empty" >&2; exit 1; }
  command -v gnuplot >/dev/null ||
    { echo "error: gnuplot not found (scripts/setup.sh installs gnuplot-nox)" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
}
