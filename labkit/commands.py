"""What each ``labkit`` command does: ``cmd_<name>(args)`` runs one command on the arguments that
``labkit.cli`` parsed, prints what it did and returns the exit status (0).

Heavy libraries (torch, matplotlib, labkit.course) are imported inside the command that needs them, so
that ``labkit --help`` and a bad argument answer at once. An error a person can fix is a LabkitError;
``labkit.cli.main`` turns it into one line on stderr.
"""

from __future__ import annotations

from pathlib import Path

from labkit.errors import LabkitError, LabkitValueError


def _check_output(path, what: str, suffixes=None) -> None:
    """Fail before the work, not after it: ``path`` must be writable as a file (a LabkitValueError if not)."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise LabkitValueError(f"{what} {p} is a folder: give a file name")
    parent = next((q for q in [p.parent, *p.parent.parents] if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise LabkitValueError(f"{what} {p}: {parent} is a file, not a folder")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise LabkitValueError(
            f"{what} {p}: unsupported file type {p.suffix or '(none)'!r}; use one of {', '.join(sorted(suffixes))}"
        )


def _image_suffixes() -> set:
    from PIL import Image

    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}


# --- train --------------------------------------------------------------------------------------------


def cmd_train(args) -> int:
    from dataclasses import replace

    import torch

    from labkit import recipes
    from labkit.checkpoint import export_release
    from labkit.data import load_mnist, synthetic_digits
    from labkit.device import pick_device
    from labkit.training import train

    device = pick_device(args.device)
    _check_output(args.export, "--export")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise LabkitValueError(f"--out {args.out} is a file, not a folder")
    name = args.recipe if args.recipe != "auto" else ("gpu" if device.type == "cuda" else "cpu")
    config = recipes.get(name)
    changes = {"seed": args.seed}
    if args.out is not None:
        changes["out_dir"] = args.out
    if args.steps is not None:  # a step count replaces the recipe's time budget...
        changes.update(total_steps=args.steps, time_budget_s=None)
    if args.minutes is not None:  # ...and a time budget replaces the step count
        changes.update(time_budget_s=60.0 * args.minutes, total_steps=10**9)
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    config = replace(config, **changes)
    if config.out_dir is None:
        config = replace(config, out_dir="runs/mnist")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.synthetic:
        data = synthetic_digits(args.synthetic, generator=torch.Generator().manual_seed(args.seed))
    else:
        data = load_mnist(args.data, train=True)
    budget = f"{config.time_budget_s / 60:g} min" if config.time_budget_s else f"{config.total_steps} steps"
    print(
        f"labkit train: recipe {name}, {budget}, batch {config.batch_size}, device {device}, "
        f"{len(data)} images -> {config.out_dir}"
    )
    result = train(config, data, device=device, resume=args.resume, progress=not args.quiet)
    print(
        f"trained to step {result.step}: {result.images_per_s:.0f} images/s, "
        f"last loss {result.losses[-1][1] if result.losses else float('nan'):.4f}; checkpoint {result.checkpoint}"
    )
    if args.export:
        path = export_release(result.checkpoint, args.export)
        print(f"release checkpoint (EMA weights, fp16) -> {path}")
    return 0


# --- sample -------------------------------------------------------------------------------------------


def cmd_sample(args) -> int:
    import torch

    from labkit.checkpoint import load_model
    from labkit.evaluation.samples_file import save_samples_file
    from labkit.samplers import SAMPLERS, Counted, sample_digits

    if args.sampler is not None and args.sampler not in SAMPLERS:
        raise LabkitValueError(f"unknown sampler {args.sampler!r}: choose one of {', '.join(SAMPLERS)}")
    _check_output(args.out, "--out")
    if args.grid not in (None, "none"):
        _check_output(args.grid, "--grid", _image_suffixes())
    model, schedule, meta = load_model(args.checkpoint, device=args.device, shipped=getattr(args, "model", "default"))
    train_cfg = meta.get("train") or {}
    args.sampler = args.sampler or train_cfg.get("sampler", "dpmpp_2m")  # the checkpoint's recipe says how
    steps = args.steps if args.steps is not None else train_cfg.get("sample_steps", 15)
    w = args.guidance if args.guidance is not None else train_cfg.get("guidance", 1.0)
    if steps > schedule.T:
        raise LabkitValueError(f"--steps {steps} is more than the model's T={schedule.T}")
    timesteps = None
    if meta.get("fast"):  # a few-step model samples on its own grid, with guidance already folded in
        from labkit.distill import student_grid

        if w > 0:
            raise LabkitValueError(f"the fast model has its guidance built in: use --guidance 0, not {w:g}")
        timesteps = student_grid(torch.tensor(meta["fast"]["grid"]), steps)
    cfg = model.config
    device = next(model.parameters()).device
    y = torch.arange(cfg.num_classes, device=device).repeat_interleave(args.per_class)  # [10 K]: 0..0, 1..1, ...
    gen = torch.Generator(device).manual_seed(args.seed)
    counted = Counted(model)  # counts the images the network is asked to denoise (a guided call counts twice)
    images = sample_digits(
        counted,
        y,
        schedule,
        shape=(cfg.in_channels, 28, 28),
        batch_size=args.batch_size,
        sampler=args.sampler,
        steps=steps,
        guidance=w,
        null_class=cfg.num_classes,
        generator=gen,
        grid=timesteps,
    ).cpu()  # [N, 1, 28, 28] in [0, 1]
    nfe = counted.rows / len(y)
    out = save_samples_file(
        args.out, images, y, sampler=args.sampler, steps=steps, guidance=w, checkpoint=meta["path"], nfe=nfe
    )
    print(
        f"{len(images)} samples ({args.sampler}, {steps} steps, guidance {w:g}), "
        f"{nfe:g} network evaluations per digit -> {out}"
    )
    grid = args.grid if args.grid is not None else str(out.with_suffix(".png"))
    if grid != "none":
        from torchvision.utils import save_image

        k = min(args.per_class, 10)
        pick = torch.cat([torch.arange(c * args.per_class, c * args.per_class + k) for c in range(cfg.num_classes)])
        # rows = samples, columns = digits
        order = pick.reshape(cfg.num_classes, k).T.reshape(-1)
        # white on black digits: a 2-pixel mid-grey border keeps neighbours apart (black would merge them)
        save_image(images[order], grid, nrow=cfg.num_classes, padding=2, pad_value=0.5)
        print(f"grid -> {grid}")
    return 0


# --- distill (the few-step model) -----------------------------------------------------------------------


def cmd_distill(args) -> int:
    from labkit.distill import run_command

    return run_command(args)


# --- evaluate -----------------------------------------------------------------------------------------


def cmd_evaluate(args) -> int:
    try:
        from labkit.evaluation.command import run_evaluate
    except ImportError as exc:
        raise LabkitError(f"evaluation is not available ({exc})") from None
    _check_output(args.json, "--json")
    if args.plot is not None:
        from matplotlib.figure import Figure

        _check_output(args.plot, "--plot", {f".{k}" for k in Figure().canvas.get_supported_filetypes()})
    table = run_evaluate(
        args.samples, json_path=args.json, plot_path=args.plot, clip=args.clip, data_root=args.data, device=args.device
    )
    print(table)
    return 0


# --- info ---------------------------------------------------------------------------------------------


def cmd_info(args) -> int:
    import platform

    import torch
    import torchvision

    from labkit import __version__
    from labkit.checkpoint import ASSET_PATH, FAST_ASSET_PATH
    from labkit.data import candidate_roots, locate_mnist
    from labkit.device import pick_device

    device = pick_device(args.device)
    print(f"labkit       {__version__}")
    print(f"python       {platform.python_version()}")
    print(f"torch        {torch.__version__}  (threads {torch.get_num_threads()})")
    print(f"torchvision  {torchvision.__version__}")
    print(f"device       {device}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"gpu {i}        {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
    print("MNIST is looked for in (first found wins):")
    for root in candidate_roots(args.data):
        print(f"  {root}{'  (exists)' if root.exists() else ''}")
    try:
        found = locate_mnist(args.data)
    except (OSError, LabkitError) as exc:
        found, note = None, f" ({exc})"
    else:
        note = ""
    if found is None:
        print(f"MNIST found  no{note}")
    else:  # the user's folder; gzip files are read through an unpacked copy in labkit's cache
        folder, tv_root = found
        print(f"MNIST found  {folder}" + (f"  (unpacked into {tv_root})" if tv_root != folder else ""))
    print(f"shipped checkpoint  {ASSET_PATH}{'' if ASSET_PATH.exists() else '  (missing)'}")
    print(f"fast model          {FAST_ASSET_PATH}{'' if FAST_ASSET_PATH.exists() else '  (missing)'}  (--model fast)")
    print("training checkpoints  <out dir>/last.pt (default runs/mnist-cpu or runs/mnist-gpu)")
    return 0


# --- report (lab 09's hand-in) --------------------------------------------------------------------------


def cmd_report(args) -> int:
    from labkit.course.export import export_html

    if args.out is not None:
        _check_output(args.out, "--out", {".html", ".htm"})
    path, notes = export_html(args.notebook, args.out)
    for note in notes:
        print(f"note: {note}")
    print(f"report -> {path}")
    return 0


# --- build / grade (labkit.course, optional) ----------------------------------------------------------


def load_course():
    """The package labkit.course, or None when it cannot be imported (an install without it)."""
    try:
        import labkit.course as course
    except ImportError:
        return None
    return course


def cmd_course(args, course) -> int:
    """``labkit build`` and ``labkit grade``, handed to ``course.cli_build`` / ``cli_grade``; ``course`` is the
    module labkit.course, or None where this install lacks it (what ``load_course()`` returns)."""
    fn = getattr(course, f"cli_{args.command}", None) if course is not None else None
    if fn is None:
        raise LabkitError(f"'labkit {args.command}' needs labkit.course, which is not available in this install")
    result = fn(args)
    return int(result) if isinstance(result, int) else 0
