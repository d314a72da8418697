#!/usr/bin/env bash
# run_mpi.sh NP PROGRAM [ARGS...] - runs a test program as NP MPI ranks on this machine
# (mpirun --oversubscribe, and --allow-run-as-root when root). Exits 77 (Meson's skip) when
# mpirun is absent. Ranks yield instead of spinning while they wait (shared CI cores).
# Under AddressSanitizer, LeakSanitizer is told about Open MPI's own allocations that live
# until exit (tests/lsan_mpi.supp); bitgrad's are still checked.
set -u
np=$1
shift
if ! command -v mpirun >/dev/null 2>&1; then
    echo "SKIP: mpirun not found (install openmpi-bin)"
    exit 77
fi
args=(--oversubscribe -np "$np")
if [ "$(id -u)" -eq 0 ]; then args+=(--allow-run-as-root); fi
export OMPI_MCA_mpi_yield_when_idle=1
# Keep Open MPI's plugins loaded to the end, so leak reports can name (and suppress) them.
export OMPI_MCA_mca_base_component_disable_dlclose=1
# Full stacks for allocations (Open MPI's libraries have no frame pointers): the suppressions
# match on them. Only matters in a sanitizer build.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
export LSAN_OPTIONS="suppressions=$(dirname "$0")/lsan_mpi.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
exec mpirun "${args[@]}" "$@"
