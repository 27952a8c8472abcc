#!/usr/bin/env bash
# Reproduce the bundled demo model from nothing with the project's own tools, in stages of at most 90 minutes
# on 2 CPU cores with the defaults below (the model card gives each stage's time). Each finished stage leaves
# $OUT/done/<stage>; a rerun with the same OUT skips the finished stages and starts the unfinished one again
# from its beginning, the two train.py stages from their newest checkpoint (remove $OUT/done/<stage> to redo
# one):
#   1. synthetic clips (scripts/make_synthetic_dataset.py)
#   2. the temporal VAE (scripts/train_demo_vae.py), its loss weighted 1 + VAE_OBJECT_WEIGHT on the objects' pixels
#      so that small shapes keep their colour and outline (issue 19); the image encoder stays a fixed random ViT.
#      Three stages of a third of the steps each (--stop-after, then --resume): a stage cut short restarts from
#      the end of the one before, so at most ~30 minutes are lost
#   3. the frozen encoders' outputs, once (svd_tools/precompute.py)
#   4. the UNet from scratch, 8 frames (train.py, full mode), in two stages of half the steps each, then a tail of
#      BASE_ANNEAL_STEPS at lr 1e-4 (an eighth of the base's): at the constant lr the weights stay noisy (held-out loss 8% apart
#      between steps 4400 and 4800), and the tail takes 11-14% off it, as much as a LoRA on other data did
#   5. ExVideo post-tuning to 32 frames (train.py, exvideo mode) on clips of its own, as the paper post-tunes on other
#      data than SVD's: the same draws (first frames, colours) with the generator options EXVIDEO_DATA, by default
#      objects that turn and pulse in place, no pans: on clips whose objects travel, post-tuning at 32 frames learns
#      to clear an object from where it was, and the star of README's image is gone after a few frames
#      (docs/demo_objects.md). Then the post-hoc EMA (svd_tools/ema.py)
#   6. the bundle with its model card (scripts/bundle_demo.py) in $OUT/assets; the bundled demo in assets/demo
#      is replaced only when asked: ASSETS=assets/demo bash scripts/train_demo.sh
#   7. a LoRA on the bundled base model (train.py --train.mode lora) for a motion kind its data lacks: objects
#      orbiting the frame centre (make_synthetic_dataset.py --motion orbit); bundled as orbit-lora.safetensors,
#      its held-out figures added to the model card (scripts/bundle_demo.py lora)
# Variables: OUT (outputs/demo_run), CLIPS (300), VAE_STEPS (3600), VAE_OBJECT_WEIGHT (4), BASE_STEPS (4800),
#            BASE_ANNEAL_STEPS (400),
#            EXVIDEO_DATA ("--drift 0 --no-pan"), EXVIDEO_STEPS (600), ORBIT_CLIPS (150), LORA_STEPS (900),
#            ASSETS ($OUT/assets)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
OUT=${OUT:-outputs/demo_run}
CLIPS=${CLIPS:-300}
VAE_STEPS=${VAE_STEPS:-3600}
VAE_OBJECT_WEIGHT=${VAE_OBJECT_WEIGHT:-4}
BASE_STEPS=${BASE_STEPS:-4800}
BASE_ANNEAL_STEPS=${BASE_ANNEAL_STEPS:-400}
ORBIT_CLIPS=${ORBIT_CLIPS:-150}
LORA_STEPS=${LORA_STEPS:-900}
EXVIDEO_STEPS=${EXVIDEO_STEPS:-600}
read -ra EXVIDEO_DATA <<< "${EXVIDEO_DATA---drift 0 --no-pan}"  # generator options, word-split
ASSETS=${ASSETS:-$OUT/assets}
mkdir -p "$OUT/done"
TIMES="$OUT/stage_seconds.json"
[ -f "$TIMES" ] || echo "{}" > "$TIMES"
stage() {  # stage NAME COMMAND...: run unless done, record the wall-clock seconds, mark done
  local name=$1; shift
  if [ -f "$OUT/done/$name" ]; then echo "== $name: done before, skipped"; return; fi
  local t0; t0=$(date +%s)
  echo "== $name: $*"
  "$@"
  "$PY" -c "import json,sys; p=sys.argv[1]; d=json.load(open(p)); d[sys.argv[2]]=int(sys.argv[3]); json.dump(d,open(p,'w'),indent=1)" \
    "$TIMES" "$name" "$(( $(date +%s) - t0 ))"
  touch "$OUT/done/$name"
}

# the data stages pass --overwrite: a stage cut short left clips of its own in its folder, and starts again
CLIPS_32=(--heldout 16 --frames 32 --size 64 --fps 8 --overwrite)  # every data stage's clips
PRECOMPUTE=("$PY" svd_tools/precompute.py --dataset.num_frames 32 --dataset.height 64 --dataset.width 64
  --dataset.fps 8)  # + the encoders and the clips
stage data "$PY" scripts/make_synthetic_dataset.py --output "$OUT/data" --clips "$CLIPS" --seed 0 "${CLIPS_32[@]}"
VAE=("$PY" scripts/train_demo_vae.py --config configs/demo/base.yaml --data "$OUT/data/train" --output "$OUT/vae"
  --steps "$VAE_STEPS" --batch 4 --frames 2 --lr 3e-4 --object-weight "$VAE_OBJECT_WEIGHT"
  --heldout "$OUT/data/heldout" --eval-every 200)
stage vae_first_third "${VAE[@]}" --stop-after "$(( VAE_STEPS / 3 ))"
stage vae_second_third "${VAE[@]}" --resume --stop-after "$(( VAE_STEPS * 2 / 3 ))"
stage vae "${VAE[@]}" --resume
stage precompute "${PRECOMPUTE[@]}" --model.config "$OUT/vae/demo-base.yaml" \
  --model.checkpoint "$OUT/vae/encoders.ckpt" --dataset.path "$OUT/data/train" --output "$OUT/latents"
BASE=("$PY" train.py --config configs/demo/train_base.yaml --model.config "$OUT/vae/demo-base.yaml"
  --model.checkpoint "$OUT/vae/encoders.ckpt" --train.output_dir "$OUT/base"
  --train.dataset.path "$OUT/latents" --train.save_every 400 --train.resume auto)
stage base "${BASE[@]}" --train.max_steps "$(( BASE_STEPS / 2 ))"
stage base_second_half "${BASE[@]}" --train.max_steps "$BASE_STEPS"
stage base_anneal "${BASE[@]}" --train.max_steps "$(( BASE_STEPS + BASE_ANNEAL_STEPS ))" --train.optimizer.lr 1.0e-4
"$PY" scripts/bundle_demo.py exvideo-config --base-config "$OUT/vae/demo-base.yaml" --output "$OUT/demo-exvideo.yaml"
BASE_CKPT=$(ls -d "$OUT"/base/checkpoints/step-* | tail -1)/trainable.ckpt
stage exvideo_data "$PY" scripts/make_synthetic_dataset.py --output "$OUT/exvideo_data" --clips "$CLIPS" --seed 0 \
  "${CLIPS_32[@]}" "${EXVIDEO_DATA[@]}"
stage exvideo_precompute "${PRECOMPUTE[@]}" --model.config "$OUT/vae/demo-base.yaml" \
  --model.checkpoint "$OUT/vae/encoders.ckpt" --dataset.path "$OUT/exvideo_data/train" --output "$OUT/exvideo_latents"
stage exvideo "$PY" train.py --config configs/demo/train_exvideo.yaml --model.config "$OUT/demo-exvideo.yaml" \
  --model.checkpoint "[$OUT/vae/encoders.ckpt, $BASE_CKPT]" --train.output_dir "$OUT/exvideo" \
  --train.dataset.path "$OUT/exvideo_latents" --train.max_steps "$EXVIDEO_STEPS" \
  --train.save_every "$(( EXVIDEO_STEPS / 5 ))" --train.resume auto
stage ema "$PY" svd_tools/ema.py --run "$OUT/exvideo" --gamma 0.9 --no-patch
stage bundle "$PY" scripts/bundle_demo.py bundle --run "$OUT" --assets "$ASSETS"
# the orbit LoRA, on the bundled (float16) base model: what --SVD.lora will be merged into
stage orbit_data "$PY" scripts/make_synthetic_dataset.py --output "$OUT/orbit" --clips "$ORBIT_CLIPS" --seed 1 \
  --motion orbit "${CLIPS_32[@]}"
stage orbit_precompute "${PRECOMPUTE[@]}" --model.config "$ASSETS/demo-base.yaml" \
  --model.checkpoint "$ASSETS/base.ckpt" --dataset.path "$OUT/orbit/train" --output "$OUT/orbit_latents"
stage lora "$PY" train.py --config configs/demo/train_lora.yaml --model.config "$ASSETS/demo-base.yaml" \
  --model.checkpoint "$ASSETS/base.ckpt" --train.output_dir "$OUT/lora" --train.dataset.path "$OUT/orbit_latents" \
  --train.max_steps "$LORA_STEPS" --train.resume auto
stage bundle_lora "$PY" scripts/bundle_demo.py lora --run "$OUT" --assets "$ASSETS"
echo "done: $ASSETS (stage times in $TIMES)"
