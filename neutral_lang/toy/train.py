"""Train the toy model from scratch: ``python -m neutral_lang.toy.train --minutes 56 --out DIR``.

Three phases, all seeded (``--seed``), logged to stdout and ``DIR/train.log``:

1. the data: ``--scenes`` random scenes of :mod:`neutral_lang.toy.world`, rendered once;
2. the VAE (``--vae-minutes``): reconstruction (MSE) plus a small KL term, batch 16; then every
   scene is encoded once (posterior mean) and the VAE's ``scaling_factor`` is set to
   1 / std of those latents, as SD does;
3. UNet and text encoder jointly, for the rest of the ``--minutes`` budget: the epsilon-
   prediction loss of DDPM (Ho et al. 2020, eq. 14) on SD 1.x's noise schedule, batch 64, each
   scene with a freshly drawn caption (:func:`world.caption` with an rng) and 10% empty captions
   so that classifier-free guidance has an unconditional model (Ho & Salimans 2022). An
   exponential moving average of the weights is what gets saved.

Every ``--save-every`` minutes and at the end, ``DIR/`` gets a complete pipeline
(``StableDiffusionPipeline.save_pretrained``, safetensors), so a run cut short still ships.
``--max-steps`` stops the joint phase after a number of steps instead (for the determinism check:
two runs with the same seed and thread count log the same losses step by step).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import architecture, world

EMPTY_CAPTION_SHARE = 0.1


class Log:
    def __init__(self, path: Path):
        self.file = path.open("a", encoding="utf-8")
        self.t0 = time.perf_counter()

    def __call__(self, text: str) -> None:
        line = f"[{time.perf_counter() - self.t0:7.1f} s] {text}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def make_data(count: int, seed: int):
    """``count`` scenes and their renders as a float tensor ``[count, 3, 64, 64]`` in [-1, 1]."""
    import torch

    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng) for _ in range(count)]
    pixels = np.stack([world.render(s) for s in scenes])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return scenes, images


def train_vae(vae, images, *, seconds: float, seed: int, log: Log, max_steps: int | None = None, batch: int = 16):
    import torch

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    vae.train()
    start, step = time.perf_counter(), 0
    while time.perf_counter() - start < seconds and (max_steps is None or step < max_steps):
        idx = torch.randint(len(images), (batch,), generator=gen)
        x = images[idx]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        mse = torch.nn.functional.mse_loss(recon, x)
        loss = mse + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0 or step == 1:
            psnr = 10 * torch.log10(4.0 / mse.detach())  # the range [-1, 1] spans 2
            log(f"vae step {step}: mse {mse.item():.5f}, PSNR {psnr.item():.1f} dB")
    vae.eval()
    return step


def encode_all(vae, images, *, batch: int = 256):
    """Posterior means of every image, ``[N, 4, 16, 16]`` (unscaled)."""
    import torch

    with torch.no_grad():
        return torch.cat([vae.encode(images[i:i + batch]).latent_dist.mean for i in range(0, len(images), batch)])


def tokenize(tok, captions: list[str]):
    import torch

    ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    return torch.tensor(ids)


class EMA:
    """An exponential moving average of a module's weights, decay warming up as (1+n)/(10+n)."""

    def __init__(self, module, decay: float = 0.999):
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    def update(self, module) -> None:
        import torch

        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for s, p in zip(self.shadow.parameters(), module.parameters()):
                s.lerp_(p, 1 - d)


def save(out: Path, *, vae, text_encoder, tokenizer, unet, record: dict) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=architecture.scheduler(), safety_checker=None, feature_extractor=None,
        image_encoder=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def train(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "train.log")
    record = {"seed": args.seed, "threads": args.threads, "scenes": args.scenes, "batch": args.batch,
              "lr": args.lr, "minutes": args.minutes, "vae_minutes": args.vae_minutes}
    log(f"start: {json.dumps(record)}")

    scenes, images = make_data(args.scenes, args.seed)
    log(f"data: {len(scenes)} scenes rendered")

    vae = architecture.vae()
    record["vae_steps"] = train_vae(vae, images, seconds=60 * args.vae_minutes, seed=args.seed + 1,
                                    log=log, max_steps=args.max_vae_steps)
    with torch.no_grad():
        held_out = make_data(256, args.seed + 1000)[1]
        recon = vae.decode(vae.encode(held_out).latent_dist.mean).sample.clamp(-1, 1)
        record["vae_psnr_db"] = round(float(10 * torch.log10(4.0 / torch.mean((recon - held_out) ** 2))), 2)
    latents = encode_all(vae, images)
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = latents * scaling
    record["scaling_factor"] = scaling
    log(f"vae: {record['vae_steps']} steps, held-out PSNR {record['vae_psnr_db']} dB, scaling_factor {scaling:.4f}")

    tok = architecture.tokenizer()
    text_encoder, unet = architecture.text_encoder(tok), architecture.unet()
    noise = architecture.noise_scheduler()
    alphas = noise.alphas_cumprod
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    ema_unet, ema_text = EMA(unet), EMA(text_encoder)
    gen = torch.Generator().manual_seed(args.seed + 2)
    rng = np.random.default_rng(args.seed + 3)
    unet.train()
    text_encoder.train()

    deadline = 60 * args.minutes
    last_save = log.elapsed()
    step, t_phase, running = 0, time.perf_counter(), None
    while log.elapsed() < deadline and (args.max_steps is None or step < args.max_steps):
        idx = torch.randint(len(scenes), (args.batch,), generator=gen)
        captions = ["" if rng.random() < EMPTY_CAPTION_SHARE else world.caption(scenes[i], rng)
                    for i in idx.tolist()]
        x0 = latents[idx]
        eps = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, noise.config.num_train_timesteps, (args.batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        cond = text_encoder(tokenize(tok, captions))[0]
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        loss = torch.nn.functional.mse_loss(pred, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for group in opt.param_groups:  # linear warm-up over the first 200 steps
            group["lr"] = args.lr * min(1.0, (step + 1) / 200)
        opt.step()
        ema_unet.update(unet)
        ema_text.update(text_encoder)
        step += 1
        value = loss.item()
        running = value if running is None else 0.98 * running + 0.02 * value
        if step <= 3 or step % 25 == 0:
            rate = step / (time.perf_counter() - t_phase)
            log(f"step {step}: loss {value!r} (smoothed {running:.4f}), {rate:.2f} steps/s")
        if log.elapsed() - last_save > 60 * args.save_every:
            record.update(steps=step, loss_smoothed=round(running, 5), minutes_used=round(log.elapsed() / 60, 1))
            save(out, vae=vae, text_encoder=ema_text.shadow, tokenizer=tok, unet=ema_unet.shadow, record=record)
            last_save = log.elapsed()
            log(f"checkpoint saved at step {step}")

    record.update(steps=step, loss_smoothed=round(running or 0.0, 5), minutes_used=round(log.elapsed() / 60, 1))
    save(out, vae=vae, text_encoder=ema_text.shadow, tokenizer=tok, unet=ema_unet.shadow, record=record)
    log(f"done: {step} joint steps in {record['minutes_used']} min, saved to {out}")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neutral_lang.toy.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the pipeline, train.log and training.json")
    parser.add_argument("--minutes", type=float, default=56.0, help="total time budget (default: 56)")
    parser.add_argument("--vae-minutes", type=float, default=6.0, help="of which the VAE phase (default: 6)")
    parser.add_argument("--save-every", type=float, default=10.0, help="minutes between checkpoints (default: 10)")
    parser.add_argument("--scenes", type=int, default=6000, help="training scenes (default: 6000)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop the joint phase after N steps")
    parser.add_argument("--max-vae-steps", type=int, default=None, help="stop the VAE phase after N steps")
    train(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
