"""`qdepth-bench serve`: a policy behind openpi's websocket protocol."""

from __future__ import annotations

from typing import Annotated

import typer

from qdepth_bench.cli.common import CheckpointOption, app, build_policy, console, err_console, policy_options
from qdepth_bench.core.errors import UserError
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry


@app.command()
def serve(
    policy: Annotated[str, typer.Option("--policy", "-p", help="registered name, module:Class or policy YAML")],
    policy_arg: Annotated[list[str] | None, typer.Option("--policy-arg", "-a", help="policy option key=value")] = None,
    checkpoint: CheckpointOption = None,
    host: Annotated[str, typer.Option(help="interface to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    suite: Annotated[
        str, typer.Option(help="suite whose task conventions openpi clients get (they send no task)")
    ] = "libero_object",
    max_request_mb: Annotated[int, typer.Option(help="largest request accepted, in MiB")] = 64,
) -> None:
    """Serve a policy over openpi's websocket protocol (for `--policy remote` and openpi clients)."""
    import asyncio

    from qdepth_bench.remote.server import PolicyServer

    if not 1 <= port <= 65535:
        raise UserError(f"--port {port} is not a TCP port; choose one in 1-65535 (e.g. 8000).")
    if max_request_mb < 1:
        raise UserError(f"--max-request-mb must be at least 1 (got {max_request_mb}); observations need a few MiB.")

    specs = suite_registry().resolve(suite)
    default_task = make_backend(specs[0]).task_info(0)
    agent = build_policy(policy, policy_options(policy_arg, checkpoint))
    server = PolicyServer(agent, default_task, max_request_mb << 20)
    identity = agent.identity()

    def listening() -> None:  # said once the port is bound, never before a bind that fails
        console.print(
            f"serving [bold]{agent.name}[/bold] (config {identity.config_hash}"
            f"{', weights ' + identity.checkpoint_hash if identity.checkpoint_hash else ''}) on "
            f"ws://{host}:{port}  · health: http://{host}:{port}/healthz · Ctrl-C stops",
            highlight=False,
        )

    try:
        asyncio.run(server.serve(host, port, on_listening=listening))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port.") from None
    except KeyboardInterrupt:
        err_console.print("server stopped.")
    finally:
        agent.close()
