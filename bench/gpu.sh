#!/usr/bin/env bash
# The GPU measurements of issues 5 and 16 in one command, for the device machine (at most 10 minutes):
#   run(command="bash bench/gpu.sh", carry=[".carry/bench", ".whl"], timeout_s=600)
# after preparing .carry/bench and .whl here as BENCHMARKS.md ("Throughput against the Trainer") shows.
# Each bench trains ours, run_glue-style `trainer` and `trainer_tuned` side by side; results land in $OUT. Lines
# come in order of importance: a run cut at 10 minutes keeps what it finished.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT"
nvidia-smi -L
# Every bench imports hf_transfer's loop, which imports `datasets`; audio decodes with soundfile and soxr.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=.:/tmp/site
python3 bench/text_classification.py --model_config bert-base --train_file .carry/bench/sst2-train.tsv \
  --tokenizer .carry/bench/tokenizer --mixed_precision bf16 --batch_size 32 --max_steps 300 --warmup_steps 50 \
  --output_json "$OUT/text-bert-base.jsonl"
for m in bert-base vit-base wav2vec2-base; do
  python3 bench/memory.py --model_config $m --mixed_precision bf16 --batch_size 32 --output_json "$OUT/memory-$m.jsonl"
done
# 989 TFLOP/s: the H100 SXM's dense bf16 peak, the H200's too; each line also has the fraction of the measured peak
python3 bench/image_classification.py --model_config vit-base --mixed_precision bf16 --peak_tflops 989 \
  --max_steps 150 --warmup_steps 30 --output_json "$OUT/image-vit-base.jsonl"
python3 bench/audio_classification.py --model_config wav2vec2-base --mixed_precision bf16 \
  --max_steps 150 --warmup_steps 30 --output_json "$OUT/audio-wav2vec2-base.jsonl"
# Feature extraction: only the head trains; ours on features cached in one pass (Whisper: its short-input window)
python3 bench/text_classification.py --model_config bert-base --train_file .carry/bench/sst2-train.tsv \
  --tokenizer .carry/bench/tokenizer --mixed_precision bf16 --strategy feature_extraction --max_train_samples 8192 \
  --max_steps 768 --output_json "$OUT/text-bert-base-features.jsonl"
python3 bench/audio_classification.py --model_config whisper-tiny --mixed_precision bf16 \
  --strategy feature_extraction --synthetic 1024 --max_steps 96 --output_json "$OUT/audio-whisper-tiny-features.jsonl"
# CUDA graphs over the 32-token buckets, both sides compiled in torch.compile's "reduce-overhead" mode (compiling
# takes minutes, and a side that fails loses only this line)
python3 bench/text_classification.py --model_config bert-base --train_file .carry/bench/sst2-train.tsv \
  --tokenizer .carry/bench/tokenizer --mixed_precision bf16 --batch_size 32 --max_steps 300 --warmup_steps 100 \
  --torch_compile_mode reduce-overhead --output_json "$OUT/text-bert-base-cudagraphs.jsonl"
# Image augmentation: where its cost goes (the loader's share per image, the GPU's for its part), then ViT-B/16 with
# the augmentation in the loader, beside the default run above that augments on the GPU
python3 bench/image_augmentation.py --synthetic 256 --output_json "$OUT/image-augmentation.jsonl"
python3 bench/audio_loader.py --synthetic 256 --output_json "$OUT/audio-loader.jsonl"
python3 bench/image_classification.py --model_config vit-base --mixed_precision bf16 --peak_tflops 989 \
  --max_steps 150 --warmup_steps 30 --augment_on loader --output_json "$OUT/image-vit-base-loader-augment.jsonl"
# Ours with padding-free encoder layers, beside both Trainer sides (length-grouped batches leave about 3 % padding)
python3 bench/text_classification.py --model_config bert-base --train_file .carry/bench/sst2-train.tsv \
  --tokenizer .carry/bench/tokenizer --mixed_precision bf16 --batch_size 32 --max_steps 300 --warmup_steps 50 \
  --padding_free --output_json "$OUT/text-bert-base-padding-free.jsonl"
