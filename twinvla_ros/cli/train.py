"""`twinvla-ros train`: fine-tune TwinVLA on a LeRobot v3.0 dataset (see twinvla_ros.training).

  twinvla-ros train --dataset datasets/lift_box --init tiny --out runs/lift_box [--steps 2000]
                    [--batch-size 8] [--lr 1e-4] [--resume]
  torchrun --nproc-per-node 4 -m twinvla_ros.cli.main train ...     (several GPUs or hosts)

Progress: a bar with the loss on a terminal, a line every --log-every steps otherwise.
"""
from __future__ import annotations

import sys


def register(subparsers) -> None:
    from twinvla_ros.training.config import TrainConfig

    defaults = TrainConfig()
    train = subparsers.add_parser("train", help="fine-tune TwinVLA on a LeRobot v3.0 dataset")
    train.add_argument("--dataset", required=True, help="dataset folder (made by `twinvla-ros convert`)")
    train.add_argument("--init", default="tiny", help="checkpoint folder to start from: a twin, or the single-arm "
                       "SingleVLA (jellyho/TwinVLA) the twin is built from; or a preset with random weights: "
                       "tiny, tiny-reference")
    train.add_argument("--tokenizer", default=None, help="tokenizer folder when --init has none "
                       "(nvidia/Eagle2-1B's for the published checkpoints)")
    train.add_argument("--out", required=True, help="run folder: checkpoints/, final/, train_log.jsonl, loss.png")
    train.add_argument("--steps", type=int, default=defaults.steps)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size, help="per process")
    train.add_argument("--lr", type=float, default=defaults.learning_rate, help="peak learning rate")
    train.add_argument("--warmup-ratio", type=float, default=defaults.warmup_ratio)
    train.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    train.add_argument("--grad-clip", type=float, default=defaults.grad_clip)
    vision = train.add_mutually_exclusive_group()
    vision.add_argument("--train-vision", dest="freeze_vision", action="store_false", default=None,
                        help="train the vision encoder too (default from a random preset)")
    vision.add_argument("--freeze-vision", dest="freeze_vision", action="store_true",
                        help="keep the vision encoder as it is (default from a checkpoint, as the reference)")
    train.add_argument("--train-on-padding", action="store_true",
                       help="keep the steps past an episode's end in the loss, as the reference does")
    train.add_argument("--proprio-dropout", type=float, default=defaults.proprio_dropout,
                       help="share of samples trained without the robot state, so the policy learns to look "
                       "(default 0, as the reference)")
    train.add_argument("--proprio-noise", type=float, default=defaults.proprio_noise, metavar="M",
                       help="std (m) of noise on each arm's xyz in the state, actions unchanged: teaches the "
                       "way back to the demo's path (default 0, as the reference)")
    train.add_argument("--image-shift", type=int, default=defaults.image_shift, metavar="PX",
                       help="shift each image by a random -PX..PX pixels (at the model's input size) per "
                       "sample: augmentation, so a vision encoder trained from scratch does not learn the demos' "
                       "exact frames (default 0, as the reference)")
    train.add_argument("--diffusion-batch", type=int, default=None,
                       help="noise draws per sample in the flow-matching loss (default: the model's, 16 as the "
                       "reference); fewer make a step cheaper where the action head dominates, as on a CPU")
    train.add_argument("--image-size", type=int, default=None, metavar="PX",
                       help="square image size for a random preset (default its own: tiny 224); a multiple of 28")
    train.add_argument("--fused-gradient", action="store_true",
                       help="train through the fused twin LLM (faster; the re-weighting's true gradient "
                       "instead of the reference's straight-through one)")
    train.add_argument("--save-every", type=int, default=defaults.save_every, help="steps between checkpoints")
    train.add_argument("--log-every", type=int, default=defaults.log_every)
    train.add_argument("--cache-gb", type=float, default=defaults.cache_gb,
                       help="memory for decoded frames: the episodes that fit are shuffled together")
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--device", default=None, help="cpu, cuda (default: cuda where there is one)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    train.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from tqdm import tqdm

    from twinvla_ros.data.lerobot.format import DatasetError
    from twinvla_ros.training.config import TrainConfig
    from twinvla_ros.training.trainer import Distributed, Trainer

    try:
        config = TrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                             warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                             freeze_vision=args.freeze_vision, mask_padding=not args.train_on_padding,
                             proprio_dropout=args.proprio_dropout, proprio_noise=args.proprio_noise,
                             image_shift=args.image_shift,
                             diffusion_batch=args.diffusion_batch,
                             image_size=args.image_size,
                             fused_gradient=args.fused_gradient, save_every=args.save_every, cache_gb=args.cache_gb,
                             log_every=args.log_every, seed=args.seed)
    except ValueError as error:
        print(f"train: {error}", file=sys.stderr)
        return 2
    main_process = Distributed.from_environment().main
    bar = tqdm(total=config.steps, unit="step", disable=not (main_process and sys.stderr.isatty()))

    def progress(step: int, total: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.refresh()
        if bar.disable and (step % config.log_every == 0 or step == total):
            print(f"[train] step {step}/{total} loss {loss:.4f}", flush=True)

    try:
        trainer = Trainer(args.dataset, args.out, init=args.init, config=config, resume=args.resume,
                          device=args.device, tokenizer_path=args.tokenizer, progress=progress)
        bar.n = trainer.resume_step
        result = trainer.run()
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError, FloatingPointError) as error:
        bar.close()
        print(f"train: {error}", file=sys.stderr)
        return 1
    bar.close()
    if main_process:
        print(f"[train] {result.steps_this_run} steps in {result.seconds:.0f} s ({result.steps_per_s:.2f} steps/s); "
              f"model: {result.final}; loss curve: {result.out / 'loss.png'}")
    return 0
