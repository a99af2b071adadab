"""The command line: thin commands over the library. The only place that turns errors into exit
codes, and the only ``asyncio.run`` call site."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from comfyline.errors import ComfylineError, OrderError, PackageInvalid
from comfyline.signals import stop_signals

app = typer.Typer(
    name="comfyline",
    help="Unattended image series on ComfyUI.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
stderr = Console(stderr=True, soft_wrap=True)  # one error, one line, at any width


@app.callback()
def _root() -> None:
    """Unattended image series on ComfyUI."""
    # A callback keeps typer in multi-command mode even while only one command exists.


def main() -> None:
    """Entry point of the ``comfyline`` command."""
    try:
        # Outside standalone mode typer returns a command's exit code instead of exiting.
        code = app(standalone_mode=False)
    except ComfylineError as exc:
        message = escape(str(exc))  # "[adobe]" in a message is text, not markup
        stderr.print(f"[bold red]{type(exc).__name__}[/]: {message}", highlight=False)
        sys.exit(2 if isinstance(exc, OrderError | PackageInvalid) else 1)
    except (KeyboardInterrupt, typer.Abort):  # click turns Ctrl-C inside a command into Abort
        stderr.print("interrupted")
        sys.exit(130)
    except typer.TyperException as exc:  # a usage error (missing or wrong arguments): no traceback
        exc.show()  # type: ignore[attr-defined]
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)


@app.command("sim")
def sim_command(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8188, help="TCP port; 0 picks a free one (printed)."),
    step_ms: float = typer.Option(0.0, help="Milliseconds per sampler step at 512x512."),
    fixed_ms: float = typer.Option(0.0, help="Fixed milliseconds per executed prompt."),
    model_load_s: float = typer.Option(0.0, help="Delay of the first prompt (model load)."),
    checkpoint: list[str] = typer.Option(  # noqa: B008 - typer's way
        ["sim-sd15.safetensors"], help="Checkpoint name the server offers (repeatable)."
    ),
    lora: list[str] = typer.Option([], help="LoRA name the server offers (repeatable)."),  # noqa: B008
    vae: list[str] = typer.Option([], help="VAE name the server offers (repeatable)."),  # noqa: B008
    upscale_model: list[str] = typer.Option(  # noqa: B008
        [], help="Upscale model name the server offers (repeatable)."
    ),
    object_info: list[Path] = typer.Option(  # noqa: B008
        [], help="Extra object_info JSON file: custom node classes (repeatable)."
    ),
    thermal: bool = typer.Option(
        False, help="Simulate the card's temperature (blackout past 85 °C)."
    ),
    room_c: float = typer.Option(25.0, help="Room temperature for the thermal model."),
    time_scale: float = typer.Option(1.0, help="Real seconds per simulated second."),
    output_dir: Path = typer.Option(Path("comfy-sim/output"), help="Where images are saved."),  # noqa: B008
) -> None:
    """Run the built-in ComfyUI simulator (the real protocol, fake images) until Ctrl-C."""
    from comfyline.sim import SimConfig, ThermalConfig, serve_forever

    config = SimConfig(
        host=host,
        port=port,
        step_s=step_ms / 1000,
        fixed_prompt_s=fixed_ms / 1000,
        model_load_s=model_load_s,
        time_scale=time_scale,
        checkpoints=tuple(checkpoint),
        loras=tuple(lora),
        vaes=tuple(vae),
        upscale_models=tuple(upscale_model),
        object_info_files=tuple(object_info),
        output_dir=output_dir,
        thermal=ThermalConfig(room_c=room_c) if thermal else None,
    )

    def listening(url: str) -> None:
        print(f"ComfyUI simulator listening on {url}", flush=True)

    serve_forever(config, listening)


@app.command("smoke-test")
def smoke_test_command(
    comfyui: str | None = typer.Option(
        None, "--comfyui", help="ComfyUI URL (default: $COMFYUI_URL, then http://127.0.0.1:8188)."
    ),
    checkpoint: str | None = typer.Option(None, help="Checkpoint name; default: the only one."),
    sim: bool = typer.Option(False, "--sim", help="Run on the built-in simulator."),
    count: int = typer.Option(10, help="Images to generate."),
    level: str = typer.Option("standard", help="Quality level."),
    out: Path = typer.Option(Path("sd/outputs/test"), help="Output folder (cleared first)."),  # noqa: B008
    pause: float | None = typer.Option(None, help="Seconds between images (default: the level's)."),
    seed: int | None = typer.Option(None, help="First seed (default: random)."),
) -> None:
    """Generate COUNT images, print a report and save it as smoke_report.json beside them."""
    import asyncio

    from comfyline.settings import Settings
    from comfyline.smoke import SmokeOptions, render_report, run_smoke_test

    overrides: dict[str, Any] = {"comfyui_url": comfyui} if comfyui else {}
    settings = Settings(**overrides)
    options = SmokeOptions(
        count=count,
        level=level,
        out_dir=out,
        pause_s=pause,
        checkpoint=checkpoint,
        use_sim=sim,
        seed=seed,
    )
    console = Console(highlight=False)
    with stop_signals(notify=lambda line: stderr.print(line, markup=False)) as stop:
        report = asyncio.run(stop.target(run_smoke_test(settings, options, console=console)))
    console.print(render_report(report))
    console.print(f"Report saved to {out / 'smoke_report.json'}")
    if report.failed:
        raise typer.Exit(code=1)


@app.command("validate")
def validate_command(
    paths: list[Path] = typer.Argument(  # noqa: B008 - typer's way
        ..., help="Order files, or folders searched for */project.yaml.", show_default=False
    ),
    comfyui: str | None = typer.Option(
        None,
        "--comfyui",
        help="Also check each valid order against this ComfyUI server (no generation).",
    ),
) -> None:
    """Check orders without generating or writing anything; exit 2 if any is invalid.

    Every problem of every order is printed to stderr as ``file:line:column: field: message``;
    ``ok:`` is printed only for an order with none.
    """
    from comfyline.orders import check_orders

    checks, problems = check_orders(paths)
    on_server = _check_on_server([c for c in checks if c.ok], comfyui) if comfyui else {}
    bad = 0
    for check in checks:
        checkpoint, found = on_server.get(check.path, (None, []))
        if check.ok and not found and check.order is not None and check.plan is not None:
            fits = f"; fits the ComfyUI server at {comfyui}, checkpoint {checkpoint}"
            fits = fits if comfyui else ""
            typer.echo(
                f"ok: {check.path} ({check.order.type}, {check.plan.images} images, "
                f"level {check.order.quality}{fits})"
            )
        else:
            bad += 1
        problems += [*check.problems, *found]
    for problem in problems:
        typer.echo(str(problem), err=True)
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {bad or len(problems)} order(s)", err=True)
        raise typer.Exit(code=2)


def _check_on_server(checks: list[Any], url: str) -> dict[Path, tuple[str | None, list[Any]]]:
    """Every problem of each valid order on the server at ``url``, by order file."""
    import asyncio

    from comfyline.comfy import ComfyUIAdapter, Endpoint
    from comfyline.orders.graphs import slot_graph_request
    from comfyline.preflight import check_orders_on_server
    from comfyline.settings import Settings

    settings = Settings(comfyui_url=url)
    orders = [(c.loaded, slot_graph_request(c.loaded, c.plan.slots[0])) for c in checks]

    async def check() -> list[tuple[str | None, list[Any]]]:
        async with ComfyUIAdapter(Endpoint.from_settings(settings)) as comfy:
            await comfy.check_ready()
            return await check_orders_on_server(comfy, orders, settings.checkpoint)

    results = asyncio.run(check()) if orders else []
    return {c.path: result for c, result in zip(checks, results, strict=True)}


@app.command("run-order")
def run_order_command(
    path: Path = typer.Argument(  # noqa: B008 - typer's way
        ..., help="The order: its project.yaml or its folder.", show_default=False
    ),
    comfyui: list[str] = typer.Option(  # noqa: B008
        [],
        "--comfyui",
        help="ComfyUI URL; repeat it for several servers (default: $COMFYUI_URLS, "
        "$COMFYUI_URL, then http://127.0.0.1:8188).",
    ),
    backends: Path | None = typer.Option(  # noqa: B008
        None, "--backends", help="A backends.yaml naming the servers (see docs/SCALING.md)."
    ),
    sim: bool = typer.Option(False, "--sim", help="Run on the built-in simulator."),
    output_root: Path | None = typer.Option(  # noqa: B008
        None, help="Folder under which orders write (default: sd/outputs)."
    ),
    pause: float | None = typer.Option(
        None,
        help="Seconds between images when no temperature sensor is found (default: the level's).",
    ),
) -> None:
    """Run an order to completion; run it again to resume after a crash or Ctrl-C.

    Images, generation_report.json, the contact sheet and the run chart go to the order's
    output folder. Exit status 1 when any image failed.
    """
    import asyncio

    from comfyline.orders import load
    from comfyline.pipeline import generate
    from comfyline.settings import Settings

    # One --comfyui names the server as before; several are the run's servers.
    overrides: dict[str, Any] = {"comfyui_url": comfyui[0]} if len(comfyui) == 1 else {}
    if output_root is not None:
        overrides["output_root"] = output_root
    if pause is not None:
        overrides["pause_s"] = pause
    if backends is not None:
        overrides["backends_file"] = backends
    settings = Settings(**overrides)
    console = Console(stderr=True, highlight=False)
    # An invalid order is reported (exit 2) before any server is contacted or started.
    loaded = load(path)
    urls = tuple(comfyui) if len(comfyui) > 1 else ()

    def say(line: str) -> None:  # a path may hold "[": no markup; a long one stays whole
        console.print(line, markup=False, soft_wrap=True)

    resume = f"comfyline run-order {path}" + (" --sim" if sim else "")
    resume += "".join(f" --comfyui {url}" for url in comfyui)
    resume += f" --backends {backends}" if backends is not None else ""
    with stop_signals(notify=say, resume=resume) as stop:
        report = asyncio.run(
            stop.target(generate(loaded, settings=settings, sim=sim, console=console, urls=urls))
        )
    if report.totals.failed + report.totals.missing:
        raise typer.Exit(code=1)


@app.command("reroll")
def reroll_command(
    path: Path = typer.Argument(  # noqa: B008 - typer's way
        ..., help="The order: its project.yaml or its folder.", show_default=False
    ),
    images: list[str] = typer.Argument(  # noqa: B008
        ...,
        help="Images to make again: file names (.png optional) or slot indexes.",
        show_default=False,
    ),
    comfyui: list[str] = typer.Option(  # noqa: B008
        [], "--comfyui", help="ComfyUI URL; repeat it for several servers (as run-order)."
    ),
    sim: bool = typer.Option(False, "--sim", help="Run on the built-in simulator."),
    output_root: Path | None = typer.Option(  # noqa: B008
        None, help="Folder under which orders write (default: sd/outputs)."
    ),
) -> None:
    """Make chosen images of an order again with new seeds; the old files move to
    <output>/rerolled/ and the report lists both. Then runs the order, as run-order does."""
    import asyncio

    from comfyline.orders import load
    from comfyline.reroll import reroll
    from comfyline.settings import Settings

    overrides: dict[str, Any] = {"comfyui_url": comfyui[0]} if len(comfyui) == 1 else {}
    if output_root is not None:
        overrides["output_root"] = output_root
    settings = Settings(**overrides)
    console = Console(stderr=True, highlight=False)
    loaded = load(path)
    names = [n.strip() for image in images for n in image.split(",") if n.strip()]
    urls = tuple(comfyui) if len(comfyui) > 1 else ()

    def say(line: str) -> None:
        console.print(line, markup=False, soft_wrap=True)

    resume = f"comfyline run-order {path}" + (" --sim" if sim else "")
    resume += "".join(f" --comfyui {url}" for url in comfyui)
    with stop_signals(notify=say, resume=resume) as stop:
        report = asyncio.run(
            stop.target(
                reroll(loaded, names, settings=settings, sim=sim, urls=urls, console=console)
            )
        )
    if report.totals.failed + report.totals.missing:
        raise typer.Exit(code=1)


@app.command("status")
def status_command(
    paths: list[Path] = typer.Argument(  # noqa: B008 - typer's way
        None, help="Order files or folders (default: automation/orders).", show_default=False
    ),
    output_root: Path | None = typer.Option(  # noqa: B008
        None, help="Folder under which orders write (default: sd/outputs)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per order, for scripts."),
) -> None:
    """Show each order's state, progress, rate, ETA, temperature and servers, also while a
    runner works on it; for an interrupted order, the command that resumes it."""
    import json

    from rich.table import Table

    from comfyline.progress import format_duration
    from comfyline.settings import Settings
    from comfyline.status import order_rows

    overrides: dict[str, Any] = {"output_root": output_root} if output_root is not None else {}
    settings = Settings(**overrides)
    rows, problems = order_rows(paths or [Path("automation/orders")], settings)
    if as_json:
        typer.echo(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        table = Table("order", "state", "done", "failed", "total", "rate", "ETA", "°C", "server")
        for row in rows:
            table.add_row(
                row.order,
                row.state + (f" (r{row.revision})" if row.revision > 1 else ""),
                str(row.done),
                str(row.failed),
                str(row.total),
                f"{row.per_minute:.1f}/min" if row.per_minute else "",
                format_duration(row.eta_s) if row.eta_s is not None else "",
                f"{row.temperature_c:.0f}" if row.temperature_c is not None else "",
                ", ".join(row.servers),
            )
        Console().print(table)
        for row in rows:
            for b in row.backends if len(row.backends) > 1 else ():
                rate = f", {b.seconds_per_image:.2f} s/image" if b.seconds_per_image else ""
                temp = f", {b.temperature_c:.0f} °C" if b.temperature_c is not None else ""
                made = f"{b.health}, {b.images} images{rate}{temp}"
                typer.echo(f"{row.order}: server {b.name}: {made}")
            for earlier in row.revisions:
                typer.echo(f"{row.order}: earlier revision {earlier}")
            if row.qc:
                typer.echo(f"{row.order}: quality: {row.qc}")
            if row.problem:
                typer.echo(f"{row.order}: invalid: {row.problem}", err=True)
            elif row.resume and row.state != "new":
                typer.echo(f"{row.order}: {row.state}; resume with: {row.resume}")
    for problem in problems:
        typer.echo(str(problem), err=True)


@app.command("review")
def review_command(
    path: Path = typer.Argument(  # noqa: B008 - typer's way
        ..., help="The order: its project.yaml or its folder.", show_default=False
    ),
    approve: list[str] = typer.Option(  # noqa: B008
        [], "--approve", help="Approve these images (file names or slot indexes; repeatable)."
    ),
    reject: list[str] = typer.Option(  # noqa: B008
        [], "--reject", help="Reject these images (they are never sold; repeatable)."
    ),
    undo: list[str] = typer.Option(  # noqa: B008
        [], "--undo", help="Forget the decision on these images (repeatable)."
    ),
    output_root: Path | None = typer.Option(  # noqa: B008
        None, help="Folder under which orders write (default: sd/outputs)."
    ),
) -> None:
    """List an order's images with their quality checks and decisions, or record decisions.

    With no --approve/--reject/--undo it lists; image names may also be separated by commas.
    """
    from rich.table import Table

    from comfyline.review import list_review, set_decision
    from comfyline.settings import Settings

    overrides: dict[str, Any] = {"output_root": output_root} if output_root is not None else {}
    settings = Settings(**overrides)
    for names, decision in ((approve, "approved"), (reject, "rejected"), (undo, None)):
        images = [n.strip() for name in names for n in name.split(",") if n.strip()]
        if images:
            changed = set_decision(path, settings, images, decision)
            typer.echo(f"{decision or 'undone'}: {len(changed)} image(s)")
    table = Table("#", "file", "seed", "checks", "motif", "decision")
    for item in list_review(path, settings):
        table.add_row(
            str(item.index),
            ", ".join(Path(f).name for f in item.files),
            str(item.seed),
            ", ".join(item.flags) or "ok",
            str(item.motif),
            item.decision or "",
        )
    Console(highlight=False).print(table)


@app.command("export")
def export_command(
    path: Path = typer.Argument(  # noqa: B008 - typer's way
        ..., help="The order: its project.yaml or its folder.", show_default=False
    ),
    market: list[str] = typer.Option(  # noqa: B008
        [], "--market", help="Marketplaces: adobe,freepik,dreamstime,123rf (default: sale.markets)."
    ),
    check: bool = typer.Option(False, "--check", help="Only list what breaks a market's rules."),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Leave out of a market's package the images it refuses."
    ),
    comfyui: str | None = typer.Option(
        None, "--comfyui", help="ComfyUI URL for a model upscale (sale.upscale.model)."
    ),
    sim: bool = typer.Option(False, "--sim", help="Upscale on the built-in simulator."),
    output_root: Path | None = typer.Option(  # noqa: B008
        None, help="Folder under which orders write (default: sd/outputs)."
    ),
) -> None:
    """Write upload packages: <order output>/export/<market>/ with the JPEGs and the CSV.

    Every file and row is checked against each market's rules first; a problem names the
    image, the field and the limit, and nothing is written (exit 2).
    """
    import asyncio

    from comfyline.exporting import check_export, export_order
    from comfyline.settings import Settings

    overrides: dict[str, Any] = {"comfyui_url": comfyui} if comfyui else {}
    if output_root is not None:
        overrides["output_root"] = output_root
    settings = Settings(**overrides)
    markets = [m.strip() for name in market for m in name.split(",") if m.strip()]
    if check:
        problems = check_export(path, settings, markets)
        for problem in problems:
            typer.echo(str(problem), err=True)
        typer.echo(f"{len(problems)} problem(s)")
        if problems:
            raise typer.Exit(code=2)
        return
    console = Console(stderr=True, highlight=False)
    result = asyncio.run(
        export_order(
            path,
            settings,
            markets,
            sim=sim,
            skip_invalid=skip_invalid,
            notify=lambda line: console.print(line),
        )
    )
    for key, package in result.package.packages.items():
        typer.echo(
            f"{key}: {len(package.files)} images in {package.folder} "
            f"({', '.join(p.name for p in package.csv_files)})"
        )
    for problem in result.package.skipped:
        typer.echo(f"skipped: {problem}")
    for why, count in result.left_out.items():
        typer.echo(f"left out: {count} {why}")
    for note in result.notes:
        typer.echo(f"note: {note}")


@app.command("serve")
def serve_command(
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on; beyond loopback a token is required (printed as a link).",
    ),
    port: int = typer.Option(8288, help="TCP port; 0 picks a free one (printed)."),
    line: Path = typer.Option(  # noqa: B008 - typer's way
        Path("automation/orders"),
        "--line",
        help="The folder of orders the dashboard shows and runs as `comfyline line --watch` "
        "does (new orders are written there).",
    ),
    comfyui: list[str] = typer.Option(  # noqa: B008
        [],
        "--comfyui",
        help="ComfyUI URL; repeat it for several servers (default: $COMFYUI_URL, then "
        "http://127.0.0.1:8188).",
    ),
    backends: Path | None = typer.Option(  # noqa: B008
        None, "--backends", help="A backends.yaml naming the servers (see docs/SCALING.md)."
    ),
    sim: bool = typer.Option(False, "--sim", help="Run orders on the built-in simulator."),
    output_root: Path | None = typer.Option(  # noqa: B008
        None, help="Folder under which orders write (default: sd/outputs)."
    ),
    max_orders: int | None = typer.Option(
        None, help="Orders the line runs at once, sharing the servers (default: 2)."
    ),
    start: bool = typer.Option(
        False, "--start", help="Start the line at once (else with the line page's Start)."
    ),
) -> None:
    """Serve the web dashboard: the line, each order live, review, export, new orders."""
    from comfyline.settings import Settings
    from comfyline.web import WebConfig, bind, needs_token, new_token, serve

    # The servers as `comfyline line` takes them: one --comfyui, several, or --backends.
    overrides: dict[str, Any] = {"comfyui_url": comfyui[0]} if len(comfyui) == 1 else {}
    if output_root is not None:
        overrides["output_root"] = output_root
    if backends is not None:
        overrides["backends_file"] = backends
    if max_orders is not None:
        overrides["line_max_orders"] = max_orders
    settings = Settings(**overrides)
    token = settings.token.get_secret_value() if settings.token else None
    if token is None and needs_token(host):
        token = new_token()
    urls = tuple(comfyui) if len(comfyui) > 1 else ()
    config = WebConfig(
        orders_dir=line, settings=settings, sim=sim, token=token, urls=urls, start_line=start
    )
    sock = bind(host, port)

    def ready(url: str) -> None:
        typer.echo(f"comfyline dashboard on {url}", err=False)
        if token:
            typer.echo(
                "Open that link once: it sets a cookie. Scripts send "
                "'Authorization: Bearer <token>'."
            )

    serve(config, sock, ready)


@app.command("line")
def line_command(
    orders_dir: Path = typer.Argument(  # noqa: B008 - typer's way
        Path("automation/orders"), help="The folder of order folders."
    ),
    watch: bool = typer.Option(False, "--watch", help="Take new orders as they appear; no end."),
    comfyui: list[str] = typer.Option(  # noqa: B008
        [], "--comfyui", help="ComfyUI URL; repeat it for several servers."
    ),
    backends: Path | None = typer.Option(  # noqa: B008
        None, "--backends", help="A backends.yaml naming the servers (see docs/SCALING.md)."
    ),
    sim: bool = typer.Option(False, "--sim", help="Run on the built-in simulator."),
    output_root: Path | None = typer.Option(  # noqa: B008
        None, help="Folder under which orders write (default: sd/outputs)."
    ),
    max_orders: int | None = typer.Option(
        None, help="Orders run at once, sharing the servers (default: 2)."
    ),
) -> None:
    """Run every unfinished order of ORDERS_DIR by priority, then age, on every server.

    Crash-safe: stop it any way (even kill -9) and start it again; it picks up where it was.
    Exit status 1 when an order it ran did not complete.
    """
    import asyncio

    from comfyline.line import Line
    from comfyline.settings import Settings

    overrides: dict[str, Any] = {"comfyui_url": comfyui[0]} if len(comfyui) == 1 else {}
    if output_root is not None:
        overrides["output_root"] = output_root
    if backends is not None:
        overrides["backends_file"] = backends
    if max_orders is not None:
        overrides["line_max_orders"] = max_orders
    settings = Settings(**overrides)
    urls = tuple(comfyui) if len(comfyui) > 1 else ()
    line = Line(orders_dir, settings, watch=watch, urls=urls, sim=sim)
    resume = f"comfyline line {orders_dir}" + (" --watch" if watch else "")
    with stop_signals(notify=lambda text: stderr.print(text, markup=False), resume=resume) as stop:
        outcomes = asyncio.run(stop.target(line.run()))
    if any(o.state != "completed" for o in outcomes):
        raise typer.Exit(code=1)


@app.command("sensor-agent")
def sensor_agent_command(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (beyond loopback: a token)."),
    port: int = typer.Option(9108, help="TCP port; 0 picks a free one (printed)."),
    token: str | None = typer.Option(
        None, help="Token clients must send (default: $COMFYLINE_SENSOR_TOKEN)."
    ),
    gpu_index: int | None = typer.Option(None, help="Which local GPU (default: 0)."),
) -> None:
    """Serve this machine's GPU readings (NVML / nvidia-smi) to a comfyline guard elsewhere."""
    import asyncio

    from comfyline.sensor_agent import check_listen, local_sensor, serve_agent
    from comfyline.settings import Settings

    overrides: dict[str, Any] = {"sensor_token": token} if token else {}
    if gpu_index is not None:
        overrides["gpu_index"] = gpu_index
    settings = Settings(**overrides)
    secret = settings.sensor_token.get_secret_value() if settings.sensor_token else None
    check_listen(host, secret)  # refuse before touching the card
    sensor = asyncio.run(local_sensor(settings.gpu_index))
    if sensor.name == "none":
        stderr.print(f"no local GPU reading ({sensor.last_error}); serving that answer")

    def listening(url: str) -> None:
        print(f"comfyline sensor agent listening on {url} (sensor: {sensor.name})", flush=True)

    serve_agent(sensor, host=host, port=port, token=secret, on_listening=listening)
