# Sourced ON THE GPU MACHINE (Ubuntu 24.04, PyTorch 2.11 in python3): unpacks the Debian
# packages carried in .device/debs (see fetch_debs.sh) into a prefix with `dpkg -x`
# (never into /), and exports the paths a build against them and against python3's
# LibTorch needs. Safe to source more than once.
#   source scripts/device/env.sh
# Exports: ES_ROOT, ES_PREFIX, ES_LIBDIR, ES_TORCH_CMAKE, ES_FMT_INCLUDE, CMAKE_PREFIX_PATH,
# PKG_CONFIG_PATH, LD_LIBRARY_PATH, PATH.
ES_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export ES_ROOT
export ES_PREFIX=${ES_PREFIX:-/opt/deb}
export ES_LIBDIR=$ES_PREFIX/usr/lib/x86_64-linux-gnu
_es_debs=${ES_DEB_DIR:-$ES_ROOT/.device/debs}

# The marker lists the .debs unpacked: a prefix unpacked from another list (a package
# added to fetch_debs.sh since) is unpacked again.
_es_list=$(ls "$_es_debs" 2>/dev/null | grep '\.deb$' | sort)
if [ "$(cat "$ES_PREFIX/.unpacked" 2>/dev/null)" != "$_es_list" ]; then
  mkdir -p "$ES_PREFIX"
  for _f in "$_es_debs"/*.deb; do
    case $(basename "$_f") in
      # Ubuntu's own headers win where they exist (their runtime libs are used anyway).
      libssl-dev_*) [ -f /usr/include/openssl/ssl.h ] && continue ;;
      zlib1g-dev_*) [ -f /usr/include/zlib.h ] && continue ;;
    esac
    dpkg -x "$_f" "$ES_PREFIX" || { echo "env.sh: dpkg -x $_f failed" >&2; return 1; }
  done
  # pkg-config files name /usr; point them at the prefix.
  for _pc in "$ES_LIBDIR"/pkgconfig/*.pc "$ES_PREFIX"/usr/share/pkgconfig/*.pc; do
    [ -f "$_pc" ] && sed -i -E "s#(=|-I|-L)/usr#\1$ES_PREFIX/usr#g" "$_pc"
  done
  # Dev symlinks whose runtime library we did not carry (libssl.so -> libssl.so.3,
  # libz.so -> libz.so.1.2.13): point them at Ubuntu's library of that soname.
  for _l in "$ES_LIBDIR"/*.so; do
    [ -L "$_l" ] && [ ! -e "$_l" ] || continue
    _t=$(basename "$(readlink "$_l")")
    while [ -n "$_t" ]; do
      _sys=$(ldconfig -p | awk -v n="$_t" '$1 == n && /x86-64/ {print $NF; exit}')
      if [ -n "$_sys" ]; then ln -sf "$_sys" "$_l"; break; fi
      case $_t in *.so.*) _t=${_t%.*} ;; *) _t="" ;; esac
    done
  done
  printf '%s\n' "$_es_list" >"$ES_PREFIX/.unpacked"
fi
# PyTorch's wheel ships fmt 12 headers in torch/include, which shadow Ubuntu's fmt 9
# that Ubuntu's spdlog 1.12 (SPDLOG_FMT_EXTERNAL, libfmt.so.9) was built with. A folder
# holding only Ubuntu's fmt, given with -I (searched before every -isystem), wins.
export ES_FMT_INCLUDE=$ES_PREFIX/fmt-include
if [ -d /usr/include/fmt ] && [ ! -e "$ES_FMT_INCLUDE/fmt" ]; then
  mkdir -p "$ES_FMT_INCLUDE" && ln -s /usr/include/fmt "$ES_FMT_INCLUDE/fmt"
fi

ES_TORCH_CMAKE=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
export ES_TORCH_CMAKE
export CMAKE_PREFIX_PATH="$ES_PREFIX/usr${ES_TORCH_CMAKE:+;$ES_TORCH_CMAKE}"
export PKG_CONFIG_PATH="$ES_LIBDIR/pkgconfig:$ES_PREFIX/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
case ":${LD_LIBRARY_PATH:-}:" in
  *":$ES_LIBDIR:"*) ;;
  *) export LD_LIBRARY_PATH="$ES_LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
esac
case ":$PATH:" in
  *":$ES_PREFIX/usr/bin:"*) ;;
  *) export PATH="$ES_PREFIX/usr/bin:$PATH" ;;
esac
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
unset _f _pc _l _t _sys _es_debs _es_list
