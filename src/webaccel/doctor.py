"""``webaccel doctor``: what each installed browser reports, and what to do about gaps."""

from __future__ import annotations

import shutil
from typing import Any

from rich.console import Console
from rich.table import Table

from webaccel.browsers import launch_worker
from webaccel.browsers.chromium import find_chromium, sandbox_plan
from webaccel.errors import WebAccelError
from webaccel.pool.routing import WorkerCaps
from webaccel.server import WebAccelServer


def advice(caps: dict[str, Any], family: str = "chromium") -> list[str]:
    """Plain-language fixes for what a page reported missing."""
    out: list[str] = []
    parsed = WorkerCaps.parse(caps)  # the routing's own reading of the report
    gpu_ok = "webgpu" in parsed.backends
    if not gpu_ok and family == "firefox":
        out.append(
            f"WebGPU: {parsed.webgpu_reason}. Headless Firefox ESR gives no WebGPU adapter "
            "here; route WebGPU work to Chromium (or the Node WebGPU worker)."
        )
    elif not gpu_ok:
        out.append(
            f"WebGPU: {parsed.webgpu_reason}. Launch Chromium with --enable-unsafe-webgpu "
            "(webaccel does) on a machine with a GPU and Vulkan drivers."
        )
    elif parsed.software_webgpu:
        arch = (parsed.adapter or {}).get("architecture") or "software"
        out.append(
            f"WebGPU: the adapter is {arch} "
            "(isFallbackAdapter), a CPU rasterizer; routing uses wasm instead (pass "
            "allow_software=True to use it). For GPU "
            "speed run the worker on a host with a GPU and Vulkan (libvulkan1 + the vendor "
            "driver)."
        )
    elif not parsed.shader_f16:
        out.append(
            "WebGPU: no shader-f16, so fp16 variants run as fp32 or on wasm. On NVIDIA with "
            "Dawn enable the vulkan_enable_f16_on_nvidia toggle."
        )
    if "webnn" not in parsed.backends:
        out.append(
            f"WebNN: {parsed.webnn_reason}. WebNN needs a browser build with a WebNN backend "
            "(Edge/Chrome on Windows or macOS, or ChromeOS); Debian's Chromium and Firefox "
            "have none."
        )
    wasm = caps.get("wasm") or {}
    if not wasm.get("crossOriginIsolated"):
        out.append(
            "WASM threads: the page is not crossOriginIsolated; serve it with COOP/COEP "
            "(webaccel's server does)."
        )
    if not wasm.get("simd"):
        out.append("WASM SIMD is missing: update the browser.")
    return out


async def _probe(server: WebAccelServer, family: str, binary: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"browser": family, "installed": True, "binary": binary}
    try:
        worker = await launch_worker(server, family)
    except WebAccelError as exc:
        return {**entry, "error": exc.message, "advice": []}
    try:
        caps = worker.capabilities
        return {
            **entry,
            "launch_ms": round(worker.launch_ms, 1),
            "backends": worker.available_backends(),
            "capabilities": caps,
            "advice": advice(caps, family),
        }
    finally:
        await worker.close()


def sandbox_status() -> dict[str, Any]:
    """Whether Chromium runs sandboxed, as which user, and why (webaccel.browsers.chromium)."""
    try:
        plan = sandbox_plan()
    except WebAccelError as exc:
        return {"sandbox": False, "user": None, "reason": exc.message, "error": True}
    return plan.describe()


async def diagnose() -> dict[str, Any]:
    from webaccel.browsers.launching import launcher_status

    installed: dict[str, str | None] = {}
    missing: dict[str, dict[str, Any]] = {}
    try:
        installed["chromium"] = str(find_chromium())
    except WebAccelError as exc:
        missing["chromium"] = {
            "error": exc.message,
            "advice": ["apt-get install chromium chromium-driver"],
        }
    firefox = shutil.which("firefox-esr") or shutil.which("firefox")
    if firefox:
        installed["firefox"] = firefox
    else:
        missing["firefox"] = {"advice": ["apt-get install firefox-esr"]}
    browsers: list[dict[str, Any]] = []
    async with WebAccelServer() as server:
        for family in ("chromium", "firefox"):
            if family in installed:
                browsers.append(await _probe(server, family, installed[family] or ""))
            else:
                browsers.append({"browser": family, "installed": False, **missing[family]})
    return {"browsers": browsers, "launchers": launcher_status(), "sandbox": sandbox_status()}


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(
        "browser",
        "WebGPU adapter",
        "fallback/software",
        "shader-f16",
        "WebNN",
        "WASM SIMD",
        "threads",
        "backends",
        title="webaccel doctor",
    )
    # On a narrow terminal cells wrap inside their column instead of being cut
    # ("chromi…"); off a terminal the console has no width cap at all.
    for column in table.columns:
        column.overflow = "fold"
    table.columns[0].no_wrap = True
    for b in report["browsers"]:
        caps = b.get("capabilities")
        if not caps:
            state = "not installed" if not b.get("installed") else b.get("error", "installed")
            table.add_row(b["browser"], state, "", "", "", "", "", "")
            continue
        gpu, nn, wasm = caps["webgpu"], caps["webnn"], caps["wasm"]
        adapter = (
            f"{gpu.get('vendor')}/{gpu.get('architecture')}" if gpu.get("available") else "none"
        )
        table.add_row(
            b["browser"],
            adapter,
            f"{gpu.get('isFallbackAdapter')}/{gpu.get('software')}"
            if gpu.get("available")
            else "-",
            str(gpu.get("shaderF16", False)),
            "yes" if nn.get("available") else ("present, unusable" if nn.get("present") else "no"),
            str(wasm.get("simd")),
            f"{wasm.get('threads')} (isolated={wasm.get('crossOriginIsolated')})",
            ", ".join(b.get("backends", [])),
        )
    console.print(table)
    launchers = Table("launcher", "browser", "ok", "why not", title="launchers")
    for column in launchers.columns:
        column.overflow = "fold"
    for row in report.get("launchers", []):
        launchers.add_row(
            row["launcher"], row["browser"], "yes" if row["ok"] else "no", row.get("why") or ""
        )
    if report.get("launchers"):
        console.print(launchers)
        switches = next((r.get("switches") for r in report["launchers"] if r.get("switches")), None)
        if switches:
            console.print("Chromium switches: " + " ".join(switches), highlight=False)
    sandbox = report.get("sandbox")
    if sandbox:
        color = "green" if sandbox.get("sandbox") else "yellow"
        console.print(
            f"[{color}]Chromium sandbox[/]: {sandbox.get('reason')}", highlight=False
        )
    for b in report["browsers"]:
        for line in b.get("advice", []):
            console.print(f"[yellow]{b['browser']}[/]: {line}", highlight=False)
        caps = b.get("capabilities") or {}
        limits = (caps.get("webgpu") or {}).get("limits")
        if limits:
            console.print(f"[dim]{b['browser']} WebGPU limits: {limits}[/]", highlight=False)
