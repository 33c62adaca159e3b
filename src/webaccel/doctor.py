"""``webaccel doctor``: what each installed browser reports, and what to do about gaps."""

from __future__ import annotations

import shutil
from typing import Any

from rich.console import Console
from rich.table import Table

from webaccel.browsers import launch_worker
from webaccel.browsers.chromium import find_chromium
from webaccel.errors import WebAccelError
from webaccel.server import WebAccelServer


def advice(caps: dict[str, Any]) -> list[str]:
    """Plain-language fixes for what a page reported missing."""
    out: list[str] = []
    gpu = caps.get("webgpu") or {}
    if not gpu.get("available"):
        out.append(
            f"WebGPU: {gpu.get('reason')}. Launch Chromium with --enable-unsafe-webgpu "
            "(webaccel does) on a machine with a GPU and Vulkan drivers."
        )
    elif gpu.get("software"):
        out.append(
            f"WebGPU: the adapter is {gpu.get('architecture') or 'software'} "
            "(isFallbackAdapter), a CPU rasterizer; auto routing uses wasm instead. For GPU "
            "speed run the worker on a host with a GPU and Vulkan (libvulkan1 + the vendor "
            "driver)."
        )
    elif not gpu.get("shaderF16"):
        out.append(
            "WebGPU: no shader-f16, so fp16 variants run as fp32 or on wasm. On NVIDIA with "
            "Dawn enable the vulkan_enable_f16_on_nvidia toggle."
        )
    nn = caps.get("webnn") or {}
    if not nn.get("available"):
        out.append(
            f"WebNN: {nn.get('reason')}. WebNN needs a browser build with a WebNN backend "
            "(Edge/Chrome on Windows or macOS, or ChromeOS); Debian's Chromium has none."
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


async def diagnose() -> dict[str, Any]:
    browsers: list[dict[str, Any]] = []
    try:
        binary = str(find_chromium())
    except WebAccelError as exc:
        browsers.append(
            {
                "browser": "chromium",
                "installed": False,
                "error": exc.message,
                "advice": ["apt-get install chromium chromium-driver"],
            }
        )
    else:
        async with WebAccelServer() as server:
            try:
                worker = await launch_worker(server, "chromium")
            except WebAccelError as exc:
                browsers.append(
                    {
                        "browser": "chromium",
                        "installed": True,
                        "binary": binary,
                        "error": exc.message,
                        "advice": [],
                    }
                )
            else:
                try:
                    caps = worker.capabilities
                    browsers.append(
                        {
                            "browser": "chromium",
                            "installed": True,
                            "binary": binary,
                            "launch_ms": round(worker.launch_ms, 1),
                            "backends": worker.available_backends(),
                            "capabilities": caps,
                            "advice": advice(caps),
                        }
                    )
                finally:
                    await worker.close()
    firefox = shutil.which("firefox-esr") or shutil.which("firefox")
    browsers.append(
        {
            "browser": "firefox",
            "installed": bool(firefox),
            "binary": firefox,
            "advice": [] if firefox else ["apt-get install firefox-esr"],
        }
    )
    return {"browsers": browsers}


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
    for b in report["browsers"]:
        for line in b.get("advice", []):
            console.print(f"[yellow]{b['browser']}[/]: {line}", highlight=False)
        caps = b.get("capabilities") or {}
        limits = (caps.get("webgpu") or {}).get("limits")
        if limits:
            console.print(f"[dim]{b['browser']} WebGPU limits: {limits}[/]", highlight=False)
