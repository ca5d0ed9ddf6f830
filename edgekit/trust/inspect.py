"""`edgekit inspect BUNDLE`: what a bundle's manifest knows, as a dict and as a readable page.

Version = content hash + user label: the content hash is sha256 over the sorted list of every
file's path and sha256 as the manifest records them (the model, data, harness: everything but the
manifest itself), so it names what runs and does not change with the label; the manifest's own
sha256 (what reports and signatures name) is shown beside it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..bundle import MANIFEST, read_manifest, verify as verify_hashes
from ..errors import BundleError, EdgekitError
from ..hashing import sha256_file
from .sign import SIGNATURE, unlisted_files

UNKNOWN = "unknown"


def content_hash(manifest: dict[str, Any]) -> str:
    """sha256 of "path\\0sha256\\n" per file listed in the manifest, in sorted path order."""
    h = hashlib.sha256()
    for rel, digest in sorted((manifest.get("files") or {}).items()):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


def _attached_reports(b: Path, manifest_sha: str) -> list[dict[str, Any]]:
    out = []
    for p in sorted(b.glob("report*.json")):
        entry: dict[str, Any] = {"file": p.name}
        try:
            r = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(r, dict) or r.get("schema") != "edgekit.report/1":
                raise ValueError("not an edgekit report")
        except (ValueError, UnicodeDecodeError, OSError) as exc:
            entry.update(valid=False, error=str(exc).splitlines()[0][:120])
            out.append(entry)
            continue
        lat, mem, acc = r.get("latency") or {}, r.get("memory") or {}, r.get("accuracy") or {}
        env = r.get("environment") or {}
        entry.update(valid=True, status=r.get("status"),
                     matches_bundle=(r.get("bundle") or {}).get("manifest_sha256") == manifest_sha,
                     device=env.get("cpu_model") or env.get("machine"),
                     p50_ms=lat.get("p50"), p95_ms=lat.get("p95"), trials=len(lat.get("trial_medians") or []),
                     peak_rss_mb=mem.get("peak_rss_mb"), accuracy=acc.get("value"),
                     self_check=(r.get("self_check") or {}).get("passed"))
        out.append(entry)
    return out


def inspect(bundle: str | Path) -> dict[str, Any]:
    """Everything `edgekit inspect` shows, JSON-ready. BundleError if there is no readable manifest;
    an altered bundle is inspected anyway and says so under "integrity"."""
    b = Path(bundle)
    m = read_manifest(b)
    manifest_sha = sha256_file(b / MANIFEST)
    try:
        verify_hashes(b)
        dangerous, other = unlisted_files(b, m)
        integrity = {"verified": not dangerous, "detail": (f"files not in the manifest: {', '.join(dangerous)}"
                                                           if dangerous else f"{len(m.get('files') or {})} files match")}
    except EdgekitError as exc:
        integrity = {"verified": False, "detail": str(exc)}
    info = m.get("bundle") or {}
    label = info.get("label")
    chash = content_hash(m)
    model, target, conv = m.get("model") or {}, m.get("target") or {}, m.get("conversion") or {}
    source, prov = m.get("source") or {}, m.get("provenance") or {}
    stages: list[dict[str, Any]] = [{"stage": "export", "exporter": conv.get("exporter"), "opset": conv.get("opset"),
                                     "static_shapes": conv.get("static_shapes"),
                                     "graph_optimization": conv.get("graph_optimization")}]
    if conv.get("quantization"):
        stages.append({"stage": "quantize", **conv["quantization"]})
    if conv.get("accuracy_control"):
        stages.append({"stage": "accuracy control", **conv["accuracy_control"]})
    for key, value in conv.items():  # recipes or other stages recorded by newer converters
        if key not in ("precision", "exporter", "opset", "static_shapes", "graph_optimization", "quantization",
                       "accuracy_control", "parity", "estimate", "accuracy") and isinstance(value, dict):
            stages.append({"stage": key, **value})
    budgets = {k: v for k, v in (target.get("budget") or {}).items() if v is not None}
    return {
        "bundle": {"name": info.get("name") or b.name, "path": str(b)},
        "version": {"content_sha256": chash, "label": label, "manifest_sha256": manifest_sha,
                    "id": f"{info.get('name') or b.name}@{chash[:12]}" + (f" ({label})" if label else "")},
        "integrity": integrity,
        "signature": {"present": (b / SIGNATURE).is_file(),
                      "note": "check it with: edgekit verify BUNDLE --pubkey KEY.pub"},
        "origin": {"kind": source.get("kind"), "path": source.get("path"), "sha256": source.get("sha256"),
                   "task": source.get("task"), "accuracy": source.get("accuracy"),
                   "source_commit": prov.get("source_commit") or source.get("git_commit")},
        "license": prov.get("license") or UNKNOWN,
        "provenance": {k: v for k, v in prov.items() if k != "license"} or {"provenance": UNKNOWN},
        "data": {k: {kk: v.get(kk) for kk in ("format", "n", "sha256", "path")}
                 for k, v in (m.get("data") or {}).items() if isinstance(v, dict)},
        "model": {"file": model.get("file"), "format": model.get("format"), "runtime": model.get("runtime"),
                  "precision": model.get("precision"), "size_bytes": model.get("size_bytes"),
                  "inputs": model.get("inputs"), "outputs": model.get("outputs")},
        "target": {"name": target.get("name"), "description": target.get("description"), "arch": target.get("arch"),
                   "isa": target.get("isa"), "device": target.get("device"), "threads": target.get("threads")},
        "stages": stages,
        "parity": conv.get("parity") or [],
        "accuracy": {"artifact": (conv.get("accuracy") or {}).get("value"), "source": source.get("accuracy"),
                     "n": (conv.get("accuracy") or {}).get("n")},
        "budgets": budgets,
        "versions": m.get("versions") or {},
        "drift_reference": bool(m.get("drift")),
        "reports": _attached_reports(b, manifest_sha),
    }


def _v(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, dict)):
        return json.dumps(x, separators=(", ", ": "))
    return str(x)


def render(info: dict[str, Any]):
    """A rich renderable: a header panel, key/value tables per section."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    ok = info["integrity"]["verified"]
    head = (f"[bold]{info['version']['id']}[/bold]\n"
            f"content sha256 {info['version']['content_sha256']}\nmanifest sha256 {info['version']['manifest_sha256']}\n"
            f"integrity: {'[green]verified[/green]' if ok else '[bold red]NOT VERIFIED[/bold red]'} "
            f"({info['integrity']['detail']})\n"
            f"signature: {'present (not checked here)' if info['signature']['present'] else 'none'}\n"
            f"licence: {'[yellow]unknown[/yellow]' if info['license'] == UNKNOWN else info['license']}")
    parts: list[Any] = [Panel(head, title=f"edgekit bundle {info['bundle']['name']}", expand=False)]

    def kv(title: str, rows: dict[str, Any]) -> Table:
        t = Table(title=title, show_header=False, title_justify="left")
        t.add_column(style="bold")
        t.add_column(overflow="fold")
        for k, v in rows.items():
            t.add_row(k, _v(v))
        return t

    parts.append(kv("origin", {**info["origin"], **info["provenance"]}))
    parts.append(kv("data", {k: f"{v.get('format')}, n={v.get('n')}, sha256 {str(v.get('sha256'))[:16]}..."
                             for k, v in info["data"].items()} or {"data": "-"}))
    parts.append(kv("model", {k: v for k, v in info["model"].items() if k not in ("inputs", "outputs")} | {
        "inputs": ", ".join(f"{i.get('name')} {i.get('shape')} {i.get('dtype')}" for i in info["model"]["inputs"] or []),
        "outputs": ", ".join(f"{o.get('name')} {o.get('shape')}" for o in info["model"]["outputs"] or [])}))
    parts.append(kv("target", info["target"]))
    st = Table(title="stages", title_justify="left")
    st.add_column("stage", style="bold")
    st.add_column("settings", overflow="fold")
    for s in info["stages"]:
        st.add_row(s["stage"], ", ".join(f"{k}={_v(v)}" for k, v in s.items() if k != "stage" and v is not None))
    for p in info["parity"]:
        st.add_row(f"parity ({p.get('stage')})", f"max abs diff {_v(p.get('max_abs_diff'))}, "
                                                 f"top-1 agreement {_v(p.get('top1_agreement'))} on n={p.get('n')}")
    parts.append(st)
    parts.append(kv("accuracy (dev machine)", info["accuracy"]))
    parts.append(kv("budgets", info["budgets"] or {"budgets": "none set"}))
    parts.append(kv("toolchain", info["versions"]))
    rt = Table(title="attached reports", title_justify="left")
    for col in ("file", "matches bundle", "status", "device", "p95 ms", "peak MiB", "accuracy"):
        rt.add_column(col)
    for r in info["reports"]:
        if not r.get("valid"):
            rt.add_row(r["file"], "-", f"[red]unreadable: {r.get('error')}[/red]", "", "", "", "")
        else:
            rt.add_row(r["file"], "yes" if r["matches_bundle"] else "[red]no (another build)[/red]", _v(r["status"]),
                       _v(r["device"]), _v(r["p95_ms"]), _v(r["peak_rss_mb"]), _v(r["accuracy"]))
    if not info["reports"]:
        rt.add_row("(none)", "", "", "", "", "", "")
    parts.append(rt)
    return Group(*parts)


__all__ = ["inspect", "render", "content_hash", "BundleError"]
