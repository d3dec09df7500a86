"""Runs a pod manifest's containers from locally built images the way a kubelet and its runtime
would, with tools Debian ships (no Docker daemon here, and `podman run` cannot set rlimits in
this sandbox):

- `buildah from` + `buildah mount` give each container its own writable layer over the image
  (the runtime creates missing mount points there, as runc does);
- `bwrap` puts the container in its own mount, PID (the entrypoint is PID 1: a signal it has
  no handler for is ignored, as in a pod) and UTS namespace (host name = pod name), makes the
  root read-only when `readOnlyRootFilesystem` says so, and binds the pod's volumes: host
  directories per emptyDir, PVC and Secret (files `defaultMode`, owned root:fsGroup);
- the image's own `setpriv` then drops to the container's uid/gid (+ fsGroup), all
  capabilities and sets no_new_privs (`allowPrivilegeEscalation: false`).

Stand-ins, not the real thing: the host's network namespace is the pod's (containers reach
each other on 127.0.0.1, and the agent's port must be free here), and its IPC namespace (pod
containers share one; MIT-SHM between X clients and Xvfb needs that). No seccomp profile, no
cgroup limits. Probes are the test's to poll."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SETPRIV = "/usr/bin/setpriv"  # util-linux, in every Debian image


class KubeletError(Exception):
    pass


def _run(argv: list[str], **kwargs: Any) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise KubeletError(f"{' '.join(argv[:3])}: {result.stderr.strip()[-2000:]}")
    return result.stdout


def resolve_argv(container: dict[str, Any], image_config: dict[str, Any]) -> list[str]:
    """Kubernetes' rule: `command` replaces the image's ENTRYPOINT (and drops its CMD), `args`
    replace its CMD."""
    entrypoint = image_config.get("Entrypoint") or []
    cmd = image_config.get("Cmd") or []
    if container.get("command"):
        return [*container["command"], *(container.get("args") or [])]
    return [*entrypoint, *(container["args"] if "args" in container else cmd)]


@dataclass
class Container:
    name: str
    proc: subprocess.Popen
    pid: int  # the container's PID 1, as the host sees it
    root: Path  # its root file system (the image plus its writable layer)
    log: Path
    env: dict[str, str]
    uid: int
    gids: list[int]
    ctr: str  # the buildah container

    def signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float) -> int:
        """What the kubelet does on pod deletion: SIGTERM to PID 1, SIGKILL after the grace
        period (killing bwrap's child, PID 1, takes the namespace's processes with it)."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            if self.wait(grace) is None:
                self.signal(signal.SIGKILL)
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def exec(self, argv: list[str], timeout: float = 60,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        """`kubectl exec`: a process in the container's namespaces and root, as its user."""
        return subprocess.run(
            ["nsenter", "--target", str(self.pid), "--mount", "--pid", "--uts", "--root", "--wd",
             "--", SETPRIV, f"--reuid={self.uid}", f"--regid={self.gids[0]}",
             f"--groups={','.join(map(str, self.gids))}", "--inh-caps=-all",
             "--bounding-set=-all", "--no-new-privs", "--", *argv],
            env=self.env, capture_output=True, text=True, timeout=timeout, input=input,
            stdin=subprocess.DEVNULL if input is None else None)


@dataclass
class PodRunner:
    pod: dict[str, Any]
    workdir: Path
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> key -> value
    claims: dict[str, Path] = field(default_factory=dict)  # PVC name -> its data, made if absent
    containers: dict[str, Container] = field(default_factory=dict)
    _volumes: dict[str, Path] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.pod["metadata"]["name"]

    @property
    def spec(self) -> dict[str, Any]:
        return self.pod["spec"]

    def _pod_sc(self) -> dict[str, Any]:
        return self.spec.get("securityContext") or {}

    def prepare_volumes(self) -> None:
        fs_group = self._pod_sc().get("fsGroup")
        base = self.workdir / "volumes"
        for volume in self.spec.get("volumes") or []:
            name = volume["name"]
            if "emptyDir" in volume:
                path = base / name
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o777)
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                path = self.claims.setdefault(claim, self.workdir / "claims" / claim)
                path.mkdir(parents=True, exist_ok=True)
            elif "secret" in volume:
                secret = volume["secret"]
                data = self.secrets.get(secret["secretName"])
                if data is None:
                    raise KubeletError(f"secret {secret['secretName']} not found")
                path = base / name
                path.mkdir(parents=True, exist_ok=True)
                for key, value in data.items():
                    (path / key).write_text(value)
                    os.chmod(path / key, secret.get("defaultMode", 0o644))
                    if fs_group is not None:
                        os.chown(path / key, 0, fs_group)
                os.chmod(path, 0o755)
                self._volumes[name] = path
                continue
            else:
                raise KubeletError(f"volume {name}: kind not supported here")
            if fs_group is not None:  # the kubelet's SetVolumeOwnership: group fsGroup, setgid
                os.chown(path, os.stat(path).st_uid, fs_group)
                os.chmod(path, os.stat(path).st_mode | 0o2070)
            self._volumes[name] = path
        etc = self.workdir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hostname").write_text(f"{self.name}\n")
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{self.name}\n")
        shutil.copy("/etc/resolv.conf", etc / "resolv.conf")
        (self.workdir / "shm").mkdir(exist_ok=True)  # the pod's /dev/shm, shared by its containers
        os.chmod(self.workdir / "shm", 0o1777)

    def _container_spec(self, name: str) -> dict[str, Any]:
        for container in self.spec["containers"]:
            if container["name"] == name:
                return container
        raise KubeletError(f"no container {name}")

    def _env(self, container: dict[str, Any], image_env: list[str]) -> dict[str, str]:
        env = dict(item.split("=", 1) for item in image_env)
        env["HOSTNAME"] = self.name
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                env[item["name"]] = self._field(source["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[item["name"]] = self.secrets[ref["name"]][ref["key"]]
            else:
                raise KubeletError(f"env {item['name']}: source not supported here")
        return env

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        if path == "metadata.name":
            return meta["name"]
        if path.startswith("metadata.annotations['"):
            return (meta.get("annotations") or {}).get(path[len("metadata.annotations['"):-2], "")
        raise KubeletError(f"fieldRef {path}: not supported here")

    def start(self, name: str, override: dict[str, Any] | None = None) -> Container:
        """Create and start one container of the pod (`override` patches its spec, e.g. a
        different command for a one-off run)."""
        container = {**self._container_spec(name), **(override or {})}
        ctr_name = f"{self.name}-{name}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        ctr = _run(["buildah", "from", "--pull=never", "--name", ctr_name,
                    container["image"]]).strip()
        try:
            return self._start(name, container, ctr)
        except BaseException:
            remove_container(ctr)
            raise

    def _start(self, name: str, container: dict[str, Any], ctr: str) -> Container:
        root = Path(_run(["buildah", "mount", ctr]).strip())
        config = json.loads(_run(["buildah", "inspect", ctr]))["OCIv1"]["config"]
        pod_sc, sc = self._pod_sc(), container.get("securityContext") or {}
        uid = int(sc.get("runAsUser", pod_sc.get("runAsUser", 0)))
        gid = int(sc.get("runAsGroup", pod_sc.get("runAsGroup", 0)))
        gids = [gid] + ([pod_sc["fsGroup"]] if "fsGroup" in pod_sc and pod_sc["fsGroup"] != gid else [])
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and uid == 0:
            raise KubeletError(f"container {name}: runAsNonRoot and uid 0")
        read_only = bool(sc.get("readOnlyRootFilesystem"))
        argv = resolve_argv(container, config)
        env = self._env(container, config.get("Env") or [])
        workdir = container.get("workingDir") or config.get("WorkingDir") or "/"

        mounts = sorted(container.get("volumeMounts") or [], key=lambda m: m["mountPath"].count("/"))
        bind = ["--ro-bind" if read_only else "--bind", str(root), "/",
                "--proc", "/proc", "--dev", "/dev",
                "--bind", str(self.workdir / "shm"), "/dev/shm"]
        for target in ("etc/hostname", "etc/hosts", "etc/resolv.conf"):
            # the runtime bind-mounts these over the image's (creating them in its writable layer)
            path = in_root(root, target)
            if not path.exists():
                path.touch()
            bind += ["--ro-bind", str(self.workdir / target), f"/{target}"]
        for mount in mounts:
            source = self._volumes[mount["name"]]
            if mount.get("subPath"):
                source = source / mount["subPath"]
                source.mkdir(exist_ok=True)
                os.chmod(source, 0o2777 if "fsGroup" in pod_sc else 0o777)
                if "fsGroup" in pod_sc:
                    os.chown(source, 0, pod_sc["fsGroup"])
            target = in_root(root, mount["mountPath"])
            if not target.exists():
                target.mkdir(parents=True)  # in the writable layer, as runc does
            # at the resolved path, as runc does (bwrap resolves an absolute symlink on the
            # way against the host's root)
            bind += ["--ro-bind" if mount.get("readOnly") else "--bind", str(source),
                     f"/{target.relative_to(root)}"]
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        info_r, info_w = os.pipe()
        argv_full = [
            "bwrap", *bind, "--unshare-pid", "--as-pid-1", "--unshare-uts", "--hostname", self.name,
            "--die-with-parent", "--new-session", "--chdir", workdir, "--info-fd", str(info_w),
            "--", SETPRIV, f"--reuid={uid}", f"--regid={gid}", f"--groups={','.join(map(str, gids))}",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", *argv]
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv_full, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, pass_fds=(info_w,),
                                    start_new_session=True)
        os.close(info_w)
        with os.fdopen(info_r) as info:
            text = info.read()
        if not text:
            proc.wait(10)
            raise KubeletError(f"container {name} did not start: {log.read_text()[-2000:]}")
        pid = json.loads(text)["child-pid"]
        started = Container(name, proc, pid, root, log, env, uid, gids, ctr)
        self.containers[name] = started
        return started

    def run_once(self, name: str, override: dict[str, Any] | None = None,
                 timeout: float = 120) -> tuple[int, str]:
        """Run a container to completion; (exit status, its log)."""
        container = self.start(name, override)
        try:
            status = container.wait(timeout)
            if status is None:
                container.stop(5)
                raise KubeletError(f"container {name} still running after {timeout}s: "
                                   f"{container.logs()[-2000:]}")
            return status, container.logs()
        finally:
            self.remove(name)

    def restart(self, name: str) -> Container:
        """What restartPolicy Always does for a container that died: a new one from the image,
        with the pod's same volumes."""
        self.remove(name)
        return self.start(name)

    def remove(self, name: str) -> None:
        container = self.containers.pop(name, None)
        if container is not None:
            if container.proc.poll() is None:
                container.stop(0)
            remove_container(container.ctr)

    def stop(self, grace: float | None = None) -> dict[str, int]:
        """Pod deletion: every container gets SIGTERM at once, then SIGKILL after the grace."""
        grace = self.spec.get("terminationGracePeriodSeconds", 30) if grace is None else grace
        for container in self.containers.values():
            if container.proc.poll() is None:
                container.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes = {}
        for name, container in list(self.containers.items()):
            if container.wait(max(deadline - time.monotonic(), 0.1)) is None:
                container.signal(signal.SIGKILL)
                container.proc.kill()
                container.proc.wait(30)
            codes[name] = container.proc.returncode
        return codes

    def close(self) -> None:
        for name in list(self.containers):
            self.remove(name)


def in_root(root: Path, path: str) -> Path:
    """`path` inside the container's root with its symlinks resolved there: an image's
    /var/run -> /run must not lead to the host's /run."""
    current = root
    parts = [p for p in path.strip("/").split("/") if p]
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise KubeletError(f"{path}: too many symlinks in the image")
            link = os.readlink(candidate)
            parts = [p for p in link.split("/") if p] + parts
            current = root if link.startswith("/") else current
            continue
        current = candidate
    return current


def remove_container(ctr: str) -> None:
    subprocess.run(["buildah", "umount", ctr], capture_output=True)
    subprocess.run(["buildah", "rm", ctr], capture_output=True)
