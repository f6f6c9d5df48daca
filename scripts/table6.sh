#!/usr/bin/env bash
# Table 6, ImageNet: ResNet-18 student alone, KD, AT and FT from a ResNet-34 teacher, top-1 /
# top-5 error.  The paper's ImageNet recipe (its appendix): 90 epochs at batch 256,
# lr 0.1 x0.1 at epochs 30 and 60, weight decay 1e-4; paraphraser 1 epoch at lr 0.1 without BN
# (the appendix: BN for CIFAR-10 only), k = 0.5 (UNCONFIRMED); FT beta 1000.  Every run is one
# torchrun of NPROC processes (GPUs); --batch-size is the global batch whatever NPROC.
#     IMAGENET_ROOT=/data/imagenet GPUS="0 1 2 3 4 5 6 7" scripts/table6.sh
#     IMAGENET_ROOT=/data/imagenet GPUS="0 1 2 3" PRETRAINED_TEACHER=1 scripts/table6.sh
#     IMAGENET_ROOT=/data/imagenet LAUNCHER=slurm NNODES=2 NPROC=8 scripts/table6.sh
#     python scripts/report.py runs --table 6
#
# Settings: scripts/lib.sh's (SEEDS defaults to 1 here: the paper reports one run; GPUS are
# all given to one run at a time), and
#   IMAGENET_ROOT=./data/imagenet  train/<wnid>/*.JPEG and val/<wnid>/*.JPEG
#   PRETRAINED_TEACHER=0   1: torchvision's ImageNet ResNet-34 (--teacher torchvision:resnet34,
#                          the file from the torch hub cache, $TORCH_HOME/hub/checkpoints)
#                          instead of training one; the table's teacher column stays empty
#   EPOCHS=90              teacher and student epochs (ITERS / TEACHER_ITERS: iterations instead);
#                          the lr drops x0.1 at 1/3 and 2/3 of the iterations (epochs 30 and 60)
#   TRAIN_IMAGES           training-set size, which sets the iterations per epoch (default:
#                          TRAIN_SUBSET, else ImageNet-1k's 1,281,167: 5,004 iterations of 256
#                          per epoch, 450,360 in 90 epochs); EVAL_EVERY defaults to one epoch
#   NPROC                  processes (GPUs) per node of a run (default: the number of GPUS, else 1)
#   TORCHRUN=torchrun      launcher (e.g. "$PYTHON -m torch.distributed.run" for another interpreter)
#   NNODES=1               LAUNCHER=slurm: nodes per run.  The job runs one torchrun per node
#                          (srun, one task per node); with NNODES > 1 they meet at a c10d rendezvous
#                          on the job's first node, RDZV_ENDPOINT, with id $SLURM_JOB_ID
#   RDZV_PORT=29500        the rendezvous port
#   RDZV_ENDPOINT          default '$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1):$RDZV_PORT',
#                          written unexpanded into the job, which expands it on its first node
#   SBATCH_ARGS            default "--nodes=$NNODES --ntasks-per-node=1 --gres=gpu:$NPROC"
#                          (add partition, time, --cpus-per-task for the decoding workers...)

# ------------------------------------------------------------------ before lib.sh reads them
SEEDS=${SEEDS:-1}
read -r -a _gpu_list <<<"${GPUS:-}"
NPROC=${NPROC:-${#_gpu_list[@]}}
if [[ $NPROC == 0 ]]; then NPROC=1; fi
NNODES=${NNODES:-1}
SBATCH_ARGS=${SBATCH_ARGS:---nodes=$NNODES --ntasks-per-node=1 --gres=gpu:$NPROC}

source "$(dirname "$0")/lib.sh"

IMAGENET_ROOT=${IMAGENET_ROOT:-./data/imagenet}
PRETRAINED_TEACHER=${PRETRAINED_TEACHER:-0}
EPOCHS=${EPOCHS:-90}
TRAIN_IMAGES=${TRAIN_IMAGES:-${TRAIN_SUBSET:-1281167}}
TORCHRUN=${TORCHRUN:-torchrun}
RDZV_PORT=${RDZV_PORT:-29500}
RDZV_ENDPOINT=${RDZV_ENDPOINT:-'$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1)':$RDZV_PORT}
BATCH=256  # the paper's global batch

[[ $NPROC =~ ^[1-9][0-9]*$ ]] || die "NPROC must be a positive integer, got '$NPROC'"
[[ $NNODES =~ ^[1-9][0-9]*$ ]] || die "NNODES must be a positive integer, got '$NNODES'"
[[ $EPOCHS =~ ^[1-9][0-9]*$ ]] || die "EPOCHS must be a positive integer, got '$EPOCHS'"
[[ $TRAIN_IMAGES =~ ^[1-9][0-9]*$ ]] || die "TRAIN_IMAGES must be a positive integer, got '$TRAIN_IMAGES'"
[[ $PRETRAINED_TEACHER == 0 || $PRETRAINED_TEACHER == 1 ]] || die "PRETRAINED_TEACHER must be 0 or 1"
[[ $IMAGENET_ROOT != *[[:space:]]* ]] || die "paths with spaces are not supported: '$IMAGENET_ROOT'"
((NNODES == 1)) || [[ $LAUNCHER == slurm ]] || die "NNODES > 1 needs LAUNCHER=slurm"
((BATCH % (NPROC * NNODES) == 0)) || die "the batch of $BATCH does not split over $((NPROC * NNODES)) processes"
STEPS=$((TRAIN_IMAGES / BATCH))
((STEPS > 0)) || die "TRAIN_IMAGES=$TRAIN_IMAGES is less than one batch of $BATCH"

# ------------------------------------------------------------------ launcher
# lib.sh starts one command per run with $PYTHON: here a torchrun over NPROC processes.
if [[ $LAUNCHER == local && -n $GPUS ]]; then
  # One run at a time on all of GPUS (lib.sh's slots are single GPUs).
  export CUDA_VISIBLE_DEVICES=${GPUS// /,}
  GPUS=
fi
if ((NNODES > 1)); then
  PYTHON="$TORCHRUN --nnodes $NNODES --nproc-per-node $NPROC --rdzv-backend c10d"
  PYTHON+=" --rdzv-endpoint $RDZV_ENDPOINT --rdzv-id \$SLURM_JOB_ID"
else
  PYTHON="$TORCHRUN --standalone --nproc-per-node $NPROC"  # a free port per run
fi

# ------------------------------------------------------------------ schedule
schedule_flags() {  # iterations -> --iters N --milestones N/3 2N/3 (those inside 1..N-1)
  local n=$1 m ms=()
  for m in $((n / 3)) $((2 * n / 3)); do
    if ((m > 0 && m < n)) && [[ " ${ms[*]} " != *" $m "* ]]; then ms+=("$m"); fi
  done
  echo "--iters $n --milestones ${ms[*]}"
}
S_ITERS=${ITERS:-$((EPOCHS * STEPS))}
T_ITERS=${TEACHER_ITERS:-$S_ITERS}
STUDENT_SCHEDULE=$(schedule_flags "$S_ITERS")
TEACHER_SCHEDULE=$(schedule_flags "$T_ITERS")
PARA_SCHEDULE=${PARA_SCHEDULE:---epochs 1}
EVAL_EVERY=${EVAL_EVERY:-$STEPS}  # evaluate (and checkpoint) once an epoch

IN="--dataset imagenet --data-root $IMAGENET_ROOT${TRAIN_SUBSET:+ --train-subset $TRAIN_SUBSET}"
IN+="${TEST_SUBSET:+ --test-subset $TEST_SUBSET} --batch-size $BATCH --lr 0.1 --wd 1e-4 --eval-batch-size 256"
FT_IMAGENET="--beta 1000 --p 1"

# ------------------------------------------------------------------ runs
D=$RUNS/imagenet
for s in $(seeds); do
  if [[ $PRETRAINED_TEACHER == 1 ]]; then
    t=torchvision:resnet34 T=tv_resnet34
  else
    t=$D/teacher-resnet34-s$s T=resnet34
    run $t train_teacher.py --arch resnet34 $IN $TEACHER_SCHEDULE --seed $s
  fi
  # The paraphraser sees the whole training set once; its reconstruction is reported on val.
  p=$D/para-$T-k0.5-s$s
  run $p                           train_paraphraser.py --teacher $t --k 0.5 --no-bn --holdout 0 $IN $PARA_SCHEDULE --seed $s
  run $D/ce-resnet18-s$s           train_student.py --method ce --arch resnet18 $IN $STUDENT_SCHEDULE --seed $s
  run $D/kd-resnet18-from-$T-s$s   train_student.py --method kd --arch resnet18 --teacher $t $KD $IN $STUDENT_SCHEDULE --seed $s
  run $D/at-resnet18-from-$T-s$s   train_student.py --method at --arch resnet18 --teacher $t $AT $IN $STUDENT_SCHEDULE --seed $s
  run $D/ft-resnet18-from-$T-k0.5-s$s train_student.py --method ft --arch resnet18 --teacher $t --paraphraser $p $FT_IMAGENET $IN $STUDENT_SCHEDULE --seed $s
done

# A torchvision:NAME teacher is weights, not a run: nothing to wait for.  (lib.sh's `run`
# takes every word after --teacher for a run folder; this drops those that are not.)
for i in "${!RUN_DEPS[@]}"; do
  _deps=()
  for _dep in ${RUN_DEPS[$i]}; do [[ $_dep == torchvision:* ]] || _deps+=("$_dep"); done
  RUN_DEPS[i]="${_deps[*]:-}"
done
schedule
