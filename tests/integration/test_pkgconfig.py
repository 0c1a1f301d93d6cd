#!/usr/bin/env python3
"""libsluice as an application sees it after `meson install`: pkg-config
finds it, examples/pubsub compiles and links against the installed header
and library only, and the programs talk to a real sluiced.

* `meson install --no-rebuild --destdir TMP` of the build under test;
* sluice.pc found under TMP; `pkg-config --cflags --libs sluice` (with
  PKG_CONFIG_SYSROOT_DIR=TMP, PKG_CONFIG_LIBDIR = the .pc's directory, so
  no other sluice.pc can be picked) points only into TMP;
* examples/pubsub/producer.c and consumer.c compile with the project's
  warnings (-Wall -Wextra -Wno-unused-parameter -Werror) and those flags
  alone (plus -fsanitize=... when the build under
  test is instrumented: its library needs the sanitizer runtime);
* the dynamic producer resolves libsluice.so.0 from TMP (ldd, with
  LD_LIBRARY_PATH), sends N messages, each reported delivered; the consumer
  prints all N, in order;
* a static link (`pkg-config --static --libs`, with libsluice.a) works too
  and does not need libsluice.so at run time.

Env: SLUICED, MESON (the meson command), MESON_BUILD_DIR, SOURCE_ROOT, CC,
B_SANITIZE.  Exit 77 (skip) only when pkg-config is not installed.
"""
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Broker, Conn, SkipTest, check, check_eq, log,  # noqa: E402
                     run, run_cmd)

N = 50


def env_or_skip(name):
    v = os.environ.get(name, "")
    if not v:
        raise SkipTest("%s is not set (run through meson test)" % name)
    return v


def sh(argv, env=None, timeout=300, what=None):
    p = subprocess.run(argv, env=env, capture_output=True, timeout=timeout)
    check(p.returncode == 0, "%s failed (%d):\n%s%s"
          % (what or " ".join(argv), p.returncode, p.stdout.decode()[-3000:],
             p.stderr.decode()[-3000:]))
    return p.stdout.decode()


def test_pkgconfig_pubsub():
    if not shutil.which("pkg-config"):
        raise SkipTest("pkg-config is not installed")
    meson = shlex.split(env_or_skip("MESON"))
    build = env_or_skip("MESON_BUILD_DIR")
    src = env_or_skip("SOURCE_ROOT")
    cc = shlex.split(os.environ.get("CC") or "cc")
    sanitize = os.environ.get("B_SANITIZE", "none")
    tmp = tempfile.mkdtemp(prefix="sluice-pkgconfig-")
    try:
        dest = os.path.join(tmp, "root")
        sh(meson + ["install", "-C", build, "--no-rebuild", "--destdir", dest],
           what="meson install --destdir")
        pcs = [os.path.join(d, "sluice.pc") for d, _, files in os.walk(dest)
               if "sluice.pc" in files]
        check_eq(len(pcs), 1, "installed sluice.pc files %r" % pcs)
        pcdir = os.path.dirname(pcs[0])
        env = dict(os.environ, PKG_CONFIG_LIBDIR=pcdir, PKG_CONFIG_PATH="",
                   PKG_CONFIG_SYSROOT_DIR=dest)
        flags = shlex.split(sh(["pkg-config", "--cflags", "--libs", "sluice"], env=env))
        log("pkg-config --cflags --libs sluice: %s" % " ".join(flags))
        paths = [f[2:] for f in flags if f[:2] in ("-I", "-L")]
        check(paths and all(p.startswith(dest + "/") for p in paths),
              "pkg-config flags must point into the install tree only: %r" % flags)
        libdir = [f[2:] for f in flags if f.startswith("-L")][0]
        check(os.path.exists(os.path.join(libdir, "libsluice.so.0")),
              "libsluice.so.0 in %s" % libdir)
        extra = ["-fsanitize=" + sanitize] if sanitize not in ("", "none") else []
        base = cc + ["-O1", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror"] + extra
        exes = {}
        for name in ("producer", "consumer"):
            exe = os.path.join(tmp, name)
            sh(base + ["-o", exe, os.path.join(src, "examples", "pubsub", name + ".c")]
               + flags, what="cc %s.c $(pkg-config --cflags --libs sluice)" % name)
            exes[name] = exe
        # static: Libs.private must be enough
        static_libs = shlex.split(sh(["pkg-config", "--static", "--libs", "sluice"], env=env))
        static_libs = [os.path.join(libdir, "libsluice.a") if f == "-lsluice" else f
                       for f in static_libs]
        cflags = shlex.split(sh(["pkg-config", "--cflags", "sluice"], env=env))
        exes["producer-static"] = os.path.join(tmp, "producer-static")
        sh(base + ["-o", exes["producer-static"],
                   os.path.join(src, "examples", "pubsub", "producer.c")]
           + cflags + static_libs, what="static link with pkg-config --static --libs")
        run_env = dict(os.environ, LD_LIBRARY_PATH=libdir)
        ldd = sh(["ldd", exes["producer"]], env=run_env)
        line = [ln for ln in ldd.splitlines() if "libsluice.so.0" in ln]
        check(line and libdir in line[0], "producer resolves libsluice from the "
              "install tree:\n%s" % ldd)
        ldd = sh(["ldd", exes["producer-static"]])
        check("libsluice" not in ldd, "static producer needs no libsluice.so:\n%s" % ldd)

        b = Broker(name="pkgconfig")
        b.start()
        with Conn(b.addr) as c:
            c.create_topic("pk", 1)
        msgs = ["msg-%d" % i for i in range(N)]
        rc, out, err = run_cmd([exes["producer"], b.addr, "pk"] + msgs[:N - 5],
                               timeout=60, what="installed producer")
        check_eq(rc, 0, "producer exit (%s)" % err.decode()[-2000:])
        check_eq(out.decode().count("delivered to pk [0]"), N - 5, "delivery reports")
        rc, out, err = run_cmd([exes["producer-static"], b.addr, "pk"] + msgs[N - 5:],
                               timeout=60, what="static producer")
        check_eq(rc, 0, "static producer exit (%s)" % err.decode()[-2000:])
        rc, out, err = run_cmd([exes["consumer"], b.addr, "pk", "0"], timeout=60,
                               what="installed consumer")
        check_eq(rc, 0, "consumer exit (%s)" % err.decode()[-2000:])
        got = out.decode().splitlines()
        check_eq(got, ["offset %d key (null): %s" % (i, m) for i, m in enumerate(msgs)],
                 "what the consumer printed")
        check("runtime error:" not in err.decode("utf-8", "replace"),
              "sanitizer report from the consumer:\n%s" % err.decode()[-2000:])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run([("pkgconfig_pubsub", test_pkgconfig_pubsub, 600)])
