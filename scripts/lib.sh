# shellcheck shell=bash
# Shared machinery of the table scripts (scripts/table*.sh), sourced by each.
#
# A table script declares its runs, one line each:
#
#     run FOLDER SCRIPT ARGS...      e.g.  run $D/teacher-resnet56-s0 train_teacher.py --arch resnet56 ...
#
# and ends with `schedule`, which starts them: teachers, then paraphrasers, then
# students (the stage is read off SCRIPT), a student only once the teacher and
# paraphraser named by its --teacher / --paraphraser are finished.  A run whose
# folder holds final.json is finished and skipped without starting Python; an
# unfinished one is resumed (the training scripts resume from checkpoint.pt).
# A folder declared twice (a teacher shared by several rows) is one run.
#
# Settings (environment variables; docs/reproducing.md has examples):
#   SEEDS=3            seeds 0..SEEDS-1 (or an explicit list: SEEDS="3 4")
#   GPUS="0 1 2 3"     one run per GPU at a time (CUDA_VISIBLE_DEVICES is set per run);
#                      empty: one run at a time on the default device
#   RUNS_PER_GPU=1     runs sharing one GPU at a time
#   CPU_JOBS=1         with GPUS empty: runs at a time on the CPU, each with OMP_NUM_THREADS
#                      = cores / CPU_JOBS (measured throughput: docs/speed.md)
#   LAUNCHER=local     local | slurm (sbatch --wrap "srun ...", --dependency=afterok:<jobid>)
#   SBATCH_ARGS="--gres=gpu:1"   extra sbatch options (partition, time, account...)
#   DRY_RUN=1          print one command line per run (finished ones as "# finished: ...")
#   ONLY=REGEX         keep only runs whose folder, relative to $RUNS, matches (bash =~)
#   RUNS=runs          root of the run folders
#   DATASET=cifar10    dataset of the CIFAR-10 rows: cifar10, or folder (the offline copy)
#   DATA_ROOT=./data   its root (folder: a directory or .tar.gz of train/<class>, test/<class>)
#   DATA_ROOT100       CIFAR-100's root (default: DATA_ROOT, or ./data when DATASET=folder)
#   ITERS              student iterations (default: the scripts' own, 64,000)
#   TEACHER_ITERS      teacher iterations (default: ITERS); at reduced scale, train
#                      teachers far longer than students (e.g. 4x) or the tables say nothing
#   PARA_EPOCHS | PARA_ITERS   paraphraser schedule (default: train_paraphraser.py's)
#   TRAIN_SUBSET, TEST_SUBSET  class-balanced subsets (default: whole sets)
#   EVAL_EVERY         --eval-every for every run (default: the scripts' own, 1000 / 500)
#   EXTRA_ARGS         appended to every command (e.g. "--batch-size 16" on a tiny set)
#   PYTHON=python      interpreter

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }
say() { echo "$(basename "$0"): $*" >&2; }

# ------------------------------------------------------------------ settings
SEEDS=${SEEDS:-3}
GPUS=${GPUS:-}
RUNS_PER_GPU=${RUNS_PER_GPU:-1}
CPU_JOBS=${CPU_JOBS:-1}
LAUNCHER=${LAUNCHER:-local}
DRY_RUN=${DRY_RUN:-0}
ONLY=${ONLY:-}
RUNS=${RUNS:-runs}
RUNS=${RUNS%/}
DATASET=${DATASET:-cifar10}
DATA_ROOT=${DATA_ROOT:-./data}
if [[ $DATASET == folder ]]; then DATA_ROOT100=${DATA_ROOT100:-./data}; else DATA_ROOT100=${DATA_ROOT100:-$DATA_ROOT}; fi
ITERS=${ITERS:-}
TEACHER_ITERS=${TEACHER_ITERS:-$ITERS}
PARA_EPOCHS=${PARA_EPOCHS:-}
PARA_ITERS=${PARA_ITERS:-}
TRAIN_SUBSET=${TRAIN_SUBSET:-}
TEST_SUBSET=${TEST_SUBSET:-}
EVAL_EVERY=${EVAL_EVERY:-}
EXTRA_ARGS=${EXTRA_ARGS:-}
PYTHON=${PYTHON:-python}
SBATCH=${SBATCH:-sbatch}
SQUEUE=${SQUEUE:-squeue}
SBATCH_ARGS=${SBATCH_ARGS:---gres=gpu:1}

[[ $SEEDS =~ ^[0-9]+( [0-9]+)*$ ]] || die "SEEDS must be a count or a list of seeds, got '$SEEDS'"
[[ $RUNS_PER_GPU =~ ^[1-9][0-9]*$ ]] || die "RUNS_PER_GPU must be a positive integer, got '$RUNS_PER_GPU'"
[[ $CPU_JOBS =~ ^[1-9][0-9]*$ ]] || die "CPU_JOBS must be a positive integer, got '$CPU_JOBS'"
[[ -z $GPUS || $CPU_JOBS == 1 ]] || die "CPU_JOBS is for CPU runs; with GPUS set use RUNS_PER_GPU"
[[ $LAUNCHER == local || $LAUNCHER == slurm ]] || die "LAUNCHER must be local or slurm, got '$LAUNCHER'"
[[ $DATASET == cifar10 || $DATASET == folder ]] || die "DATASET must be cifar10 or folder (the CIFAR-10 copy), got '$DATASET'"
[[ -z $PARA_EPOCHS || -z $PARA_ITERS ]] || die "set PARA_EPOCHS or PARA_ITERS, not both"
for _path in "$RUNS" "$DATA_ROOT" "$DATA_ROOT100" "$REPO"; do
  [[ $_path != *[[:space:]]* ]] || die "paths with spaces are not supported: '$_path'"
done
if [[ -n $ITERS && $TEACHER_ITERS == "$ITERS" ]]; then
  say "note: teachers get as many iterations as students (ITERS=$ITERS); at reduced scale set" \
      "TEACHER_ITERS (e.g. $((ITERS * 4))) so the teacher beats the student alone (docs/reproducing.md)"
fi

seeds() { if [[ $SEEDS == *" "* ]]; then echo "$SEEDS"; else seq 0 $((SEEDS - 1)); fi; }

# ------------------------------------------------------------------ what the table lines use
_subsets="${TRAIN_SUBSET:+ --train-subset $TRAIN_SUBSET}${TEST_SUBSET:+ --test-subset $TEST_SUBSET}"
C10="--dataset $DATASET --data-root $DATA_ROOT$_subsets"    # data flags of the CIFAR-10 rows
C100="--dataset cifar100 --data-root $DATA_ROOT100$_subsets"
D10=$RUNS/$DATASET                                          # their run folders
D100=$RUNS/cifar100
TEACHER_SCHEDULE="${TEACHER_ITERS:+--iters $TEACHER_ITERS}"
STUDENT_SCHEDULE="${ITERS:+--iters $ITERS}"
PARA_SCHEDULE="${PARA_EPOCHS:+--epochs $PARA_EPOCHS}${PARA_ITERS:+--iters $PARA_ITERS}"
# Every table paraphraser says whether it holds out images (train_paraphraser.py's default share).
PARA_HOLDOUT="--holdout 0.1"
# The paper's transfer hyperparameters (Sec. 4 and its appendix; baselines as docs/choices.md), spelled out
# in every command so each run folder's args.json records them.
FT="--beta 500 --p 1"
KD="--kd-T 4 --kd-alpha 0.9"
AT="--at-beta 1000"
# The k sweep of Tables 1 and 3 (the paper states five values between 0.5 and 4, not which):
# scripts/paper.py holds it for the report too.  python3, not $PYTHON: that may be a launcher.
K_SWEEP=$(python3 "$REPO/scripts/paper.py" --k-sweep) || die "python3 scripts/paper.py --k-sweep failed"
# A table's student:teacher pairs (Tables 1-3), read from the paper's numbers in scripts/paper.py.
pairs() { python3 "$REPO/scripts/paper.py" --pairs "$1" || die "python3 scripts/paper.py --pairs $1 failed"; }

# ------------------------------------------------------------------ declaring runs
declare -a RUN_DIR=() RUN_CMD=() RUN_STAGE=() RUN_DEPS=()
declare -A RUN_INDEX=()

run() {
  local dir=$1 script=$2 stage
  shift 2
  case $script in
    train_teacher.py | detection/train_teacher.py) stage=1 ;;
    train_paraphraser.py | detection/train_paraphraser.py) stage=2 ;;
    train_student.py | detection/train_student.py) stage=3 ;;
    *) die "run $dir: unknown script '$script' ([detection/]train_teacher.py, train_paraphraser.py, train_student.py)" ;;
  esac
  local words
  set -f
  # shellcheck disable=SC2206  # word splitting is intended: flags come in variables
  words=($PYTHON $script "$@" ${EVAL_EVERY:+--eval-every $EVAL_EVERY} $EXTRA_ARGS --out "$dir")
  set +f
  local cmd="${words[*]}"
  if [[ -n ${RUN_INDEX[$dir]+set} ]]; then
    [[ ${RUN_CMD[${RUN_INDEX[$dir]}]} == "$cmd" ]] ||
      die "two different commands for $dir:"$'\n'"  ${RUN_CMD[${RUN_INDEX[$dir]}]}"$'\n'"  $cmd"
    return 0
  fi
  # Dependencies: the folders after --teacher and --paraphraser.
  local deps=() taking=0 w
  for w in "$@"; do
    case $w in
      --teacher | --paraphraser) taking=1 ;;
      --*) taking=0 ;;
      *) if ((taking)); then deps+=("$w"); fi ;;
    esac
  done
  RUN_INDEX[$dir]=${#RUN_DIR[@]}
  RUN_DIR+=("$dir")
  RUN_CMD+=("$cmd")
  RUN_STAGE+=("$stage")
  RUN_DEPS+=("${deps[*]:-}")
}

finished() { [[ -f $1/final.json ]]; }

# ------------------------------------------------------------------ scheduling
schedule() {
  local i selected=() n_stage=(0 0 0 0) n_done=0
  for i in "${!RUN_DIR[@]}"; do
    if [[ -n $ONLY && ! ${RUN_DIR[$i]#"$RUNS"/} =~ $ONLY ]]; then continue; fi
    selected+=("$i")
    n_stage[RUN_STAGE[i]]=$((n_stage[RUN_STAGE[i]] + 1))
    if finished "${RUN_DIR[$i]}"; then n_done=$((n_done + 1)); fi
    local dep
    for dep in ${RUN_DEPS[$i]}; do
      [[ -n ${RUN_INDEX[$dep]+set} ]] || finished "$dep" ||
        die "${RUN_DIR[$i]} needs $dep, which no line of $(basename "$0") trains"
    done
  done
  say "${#selected[@]} runs (${n_stage[1]} teachers, ${n_stage[2]} paraphrasers, ${n_stage[3]} students)," \
      "$n_done finished${ONLY:+; ONLY=$ONLY}"
  if [[ $DRY_RUN == 1 ]]; then
    local stage
    for stage in 1 2 3; do
      for i in "${selected[@]}"; do
        [[ ${RUN_STAGE[$i]} == "$stage" ]] || continue
        if finished "${RUN_DIR[$i]}"; then echo "# finished: ${RUN_CMD[$i]}"; else echo "${RUN_CMD[$i]}"; fi
      done
    done
    return 0
  fi
  if [[ $LAUNCHER == slurm ]]; then _schedule_slurm "${selected[@]}"; else _schedule_local "${selected[@]}"; fi
}

# Local: stage by stage; within a stage, runs spread over the slots (GPU x RUNS_PER_GPU).
_schedule_local() {
  local slots=() g r i j stage dep failed=0 started=0
  if [[ -n $GPUS ]]; then
    for ((r = 0; r < RUNS_PER_GPU; r++)); do for g in $GPUS; do slots+=("$g"); done; done
  elif ((CPU_JOBS > 1)); then
    _CPU_THREADS=$(( $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN) / CPU_JOBS ))
    ((_CPU_THREADS >= 1)) || _CPU_THREADS=1
    for ((r = 0; r < CPU_JOBS; r++)); do slots+=("cpu"); done
  else
    slots=("")
  fi
  _STATUS_DIR=$(mktemp -d)
  _SLOT_PID=() _SLOT_RUN=() _SLOT_T0=() _FAILED=0
  trap '_stop_all; exit 130' INT TERM
  local n=0 total=$#
  for stage in 1 2 3; do
    for i in "$@"; do
      [[ ${RUN_STAGE[$i]} == "$stage" ]] || continue
      local dir=${RUN_DIR[$i]}
      n=$((n + 1))
      if finished "$dir"; then say "run $n of $total: ${dir#"$RUNS"/} skipped (finished)"; continue; fi
      for dep in ${RUN_DEPS[$i]}; do
        if ! finished "$dep"; then
          say "run $n of $total: ${dir#"$RUNS"/} skipped ($dep is not finished)"
          _FAILED=$((_FAILED + 1))
          continue 2
        fi
      done
      say "run $n of $total: ${dir#"$RUNS"/}"
      _take_slot "${#slots[@]}"
      j=$_FREE
      _launch "$j" "${slots[$j]}" "$i"
      started=$((started + 1))
    done
    _wait_all "${#slots[@]}"
  done
  rm -rf "$_STATUS_DIR"
  trap - INT TERM
  say "started $started runs, $_FAILED failed or skipped"
  ((_FAILED == 0))
}

_launch() {  # slot gpu index
  local j=$1 gpu=$2 i=$3 dir=${RUN_DIR[$3]} cmd=${RUN_CMD[$3]} env="" label=""
  mkdir -p "$dir"
  if [[ $gpu == cpu ]]; then env="OMP_NUM_THREADS=$_CPU_THREADS" label="$env: "
  elif [[ -n $gpu ]]; then env="CUDA_VISIBLE_DEVICES=$gpu" label="gpu $gpu: "; fi
  echo "=== $(date '+%F %T') ${env:+$env }$cmd" >>"$dir/log.txt"
  say "[start] $label$cmd"
  (
    trap 'kill -TERM "$child" 2>/dev/null' TERM
    set -f
    if [[ -n $env ]]; then export "${env?}"; fi
    # shellcheck disable=SC2086
    $cmd >>"$dir/log.txt" 2>&1 </dev/null &
    child=$!
    rc=0
    wait "$child" || rc=$?
    while kill -0 "$child" 2>/dev/null; do rc=0; wait "$child" || rc=$?; done
    echo "$rc" >"$_STATUS_DIR/$j"
  ) &
  _SLOT_PID[j]=$!
  _SLOT_RUN[j]=$i
  _SLOT_T0[j]=$SECONDS
}

_reap() {  # slot: collect a finished run, if the slot holds one
  local j=$1 rc
  [[ -n ${_SLOT_PID[j]:-} ]] || return 0
  wait "${_SLOT_PID[j]}" 2>/dev/null || true
  rc=$(cat "$_STATUS_DIR/$j")
  rm -f "$_STATUS_DIR/$j"
  local dir=${RUN_DIR[${_SLOT_RUN[j]}]} took=$((SECONDS - _SLOT_T0[j]))
  if [[ $rc == 0 ]] && finished "$dir"; then
    say "[done] $dir (${took} s)"
  else
    say "[FAILED] $dir (exit $rc after ${took} s; see $dir/log.txt)"
    _FAILED=$((_FAILED + 1))
  fi
  _SLOT_PID[j]=
}

_take_slot() {  # number of slots -> _FREE
  local n=$1 j
  while :; do
    for ((j = 0; j < n; j++)); do
      if [[ -z ${_SLOT_PID[j]:-} ]]; then _FREE=$j; return 0; fi
      if [[ -f $_STATUS_DIR/$j ]]; then _reap "$j"; _FREE=$j; return 0; fi
    done
    sleep 0.2
  done
}

_wait_all() {
  local n=$1 j busy
  while :; do
    busy=0
    for ((j = 0; j < n; j++)); do
      [[ -n ${_SLOT_PID[j]:-} ]] || continue
      if [[ -f $_STATUS_DIR/$j ]]; then _reap "$j"; else busy=1; fi
    done
    ((busy)) || return 0
    sleep 0.2
  done
}

_stop_all() {  # SIGINT/SIGTERM: the training scripts checkpoint on SIGTERM; re-running resumes
  say "stopping: the running trainings save a checkpoint; re-run the same command to resume"
  local pid
  for pid in "${_SLOT_PID[@]}"; do [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null; done
  wait || true
  rm -rf "$_STATUS_DIR"
}

# Slurm: every unfinished run is a job; a student's job waits (afterok) on the jobs of its
# teacher and paraphraser.  A run already queued by an earlier invocation is not submitted
# again (its job id is kept in FOLDER/slurm.jobid).
_schedule_slurm() {
  declare -A job=()
  local i stage dep dir id ids submitted=0 skipped=0 n=0 total=$#
  for stage in 1 2 3; do
    for i in "$@"; do
      [[ ${RUN_STAGE[$i]} == "$stage" ]] || continue
      dir=${RUN_DIR[$i]}
      n=$((n + 1))
      if finished "$dir"; then say "run $n of $total: ${dir#"$RUNS"/} skipped (finished)"; continue; fi
      ids=()
      for dep in ${RUN_DEPS[$i]}; do
        finished "$dep" && continue
        if [[ -z ${job[$dep]:-} ]] && id=$(_queued_job "$dep"); then job[$dep]=$id; fi
        if [[ -z ${job[$dep]:-} ]]; then
          say "run $n of $total: [skip] $dir: $dep is neither finished nor queued"
          skipped=$((skipped + 1))
          continue 2
        fi
        ids+=("${job[$dep]}")
      done
      if id=$(_queued_job "$dir"); then
        say "run $n of $total: [queued] $dir is job $id already"
        job[$dir]=$id
        continue
      fi
      mkdir -p "$dir"
      local dependency=()
      if ((${#ids[@]})); then dependency=("--dependency=afterok:$(IFS=:; echo "${ids[*]}")"); fi
      # shellcheck disable=SC2086
      id=$($SBATCH --parsable --job-name "ft:${dir#"$RUNS"/}" --output "$dir/slurm-%j.log" $SBATCH_ARGS \
             "${dependency[@]}" --wrap "cd $REPO && srun ${RUN_CMD[$i]}")
      id=${id%%;*}
      [[ $id =~ ^[0-9]+$ ]] || die "sbatch did not return a job id for $dir (got '$id')"
      echo "$id" >"$dir/slurm.jobid"
      job[$dir]=$id
      submitted=$((submitted + 1))
      say "run $n of $total: [submitted] job $id${dependency:+ (${dependency[0]#--})}: $dir"
    done
  done
  say "submitted $submitted jobs, $skipped skipped"
  ((skipped == 0))
}

_queued_job() {  # folder -> the id of its pending/running job from an earlier invocation
  local file=$1/slurm.jobid id state
  [[ -f $file ]] || return 1
  id=$(<"$file")
  state=$($SQUEUE -h -j "$id" -o %T 2>/dev/null) || return 1
  [[ $state =~ PENDING|RUNNING|CONFIGURING|REQUEUED|SUSPENDED ]] || return 1
  echo "$id"
}
