"""Runs one computer-use call's actions against the desktop sandbox's display
and prints a screenshot.

The executor runs it as the *sandbox* uid in a ``docker exec`` into a desktop
session container (argv from the tool registry:
``python3 -I /usr/local/lib/airlock-desktop/act.py ACTIONS``), with
DISPLAY=:99; the keeper (airlock-desktop) owns the display. ACTIONS is a JSON
array of actions in the Responses API's computer_call shape:

  {"type": "click", "x", "y", "button": "left"|"right"|"wheel"|"back"|"forward"}
  {"type": "double_click", "x", "y"}
  {"type": "scroll", "x", "y", "scroll_x", "scroll_y"}   (pixels; 100 px a wheel step)
  {"type": "type", "text"}
  {"type": "keypress", "keys": ["CTRL", "A"]}            (pressed together)
  {"type": "wait"}                                       (1 s)
  {"type": "screenshot"}                                 (the final one is always taken)
  {"type": "move", "x", "y"}
  {"type": "drag", "path": [{"x", "y"}, ...]}

Every action is checked before any runs (known type and fields only,
coordinates inside the display, bounded text, known keys): anything invalid
exits 2 with a message on stderr and nothing runs. Each action is one or more
xdotool runs (argv lists, never a shell). After the last one and a short
settle, a PNG of the whole display goes to stdout as one line of base64.
"""

# Run inside the image, not part of a package; it prints to stdout and stderr
# as its interface; it runs fixed programs (xdotool, import) from argv lists.
# ruff: noqa: INP001, T201, S603

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DISPLAY = ":99"
#: The keeper's display socket, in the container's own /tmp.
SOCKET = Path("/tmp/.X11-unix/X99")  # noqa: S108 - not a temporary file: the X server's socket
#: A session's first call may come while the keeper still starts the display.
SOCKET_WAIT_S = 20.0
SETTLE_S = 0.3
WAIT_S = 1.0
MAX_ACTIONS = 64
MAX_TEXT = 4096
MAX_PATH = 1024
MAX_KEYS = 8
MAX_SCROLL_STEPS = 50
SCROLL_STEP_PX = 100
STEP_TIMEOUT_S = 30.0
XDOTOOL = "/usr/bin/xdotool"
#: 8-bit RGB always (png24): left alone, ImageMagick picks the smallest
#: encoding, a 1-bit grey one for a blank screen.
SCREENSHOT = ("/usr/bin/import", "-silent", "-window", "root", "-depth", "8", "png24:-")
#: The browser's window, which the keeper maps once chromium is up.
BROWSER_WINDOW = (XDOTOOL, "search", "--onlyvisible", "--class", "chromium")
#: After the browser's window first shows, how long the page may take to paint.
FIRST_PAINT_S = 1.5

BUTTONS = {"left": "1", "wheel": "2", "right": "3", "back": "8", "forward": "9"}
#: OpenAI key names (upper-cased) -> X keysyms.
NAMED_KEYS = {
    "CTRL": "ctrl", "CONTROL": "ctrl", "SHIFT": "shift", "ALT": "alt", "OPTION": "alt",
    "META": "super", "SUPER": "super", "CMD": "super", "COMMAND": "super", "WIN": "super",
    "ENTER": "Return", "RETURN": "Return", "ESC": "Escape", "ESCAPE": "Escape",
    "SPACE": "space", "TAB": "Tab", "BACKSPACE": "BackSpace", "DELETE": "Delete", "DEL": "Delete",
    "INSERT": "Insert", "HOME": "Home", "END": "End", "PAGEUP": "Prior", "PAGEDOWN": "Next",
    "ARROWLEFT": "Left", "LEFT": "Left", "ARROWRIGHT": "Right", "RIGHT": "Right",
    "ARROWUP": "Up", "UP": "Up", "ARROWDOWN": "Down", "DOWN": "Down",
    "CAPSLOCK": "Caps_Lock",
    **{f"F{n}": f"F{n}" for n in range(1, 13)},
}  # fmt: skip
PUNCTUATION = {
    "-": "minus", "=": "equal", "[": "bracketleft", "]": "bracketright", "\\": "backslash",
    ";": "semicolon", "'": "apostrophe", ",": "comma", ".": "period", "/": "slash", "`": "grave",
    "+": "plus", "*": "asterisk", "!": "exclam", "?": "question", ":": "colon",
}  # fmt: skip
FIELDS = {
    "click": {"x", "y", "button", "keys"},
    "double_click": {"x", "y", "keys"},
    "scroll": {"x", "y", "scroll_x", "scroll_y", "keys"},
    "type": {"text"},
    "keypress": {"keys"},
    "wait": set(),
    "screenshot": set(),
    "move": {"x", "y", "keys"},
    "drag": {"path", "keys"},
}
#: Fields an action may leave out; ``keys`` on a pointer action are the
#: keys held while it runs (the SDK's shape; the policy decides which).
OPTIONAL = {
    "click": {"button", "keys"},
    "double_click": {"keys"},
    "scroll": {"scroll_x", "scroll_y", "keys"},
    "move": {"keys"},
    "drag": {"keys"},
}


class InvalidActionError(ValueError):
    pass


Step = list[str]
#: A "wait" action's step: a pause, not a program.
PAUSE: Step = ["sleep"]


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidActionError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return value


def _keysym(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidActionError(f"a key must be a non-empty string, got {key!r}")
    upper = key.upper()
    if upper in NAMED_KEYS:
        return NAMED_KEYS[upper]
    if len(key) == 1 and key.isascii() and key.isalnum():
        return key.lower()
    if key in PUNCTUATION:
        return PUNCTUATION[key]
    raise InvalidActionError(f"unknown key {key!r}")


class Planner:
    """Turns one checked action into its xdotool argvs, for a display of one size."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height

    def point(self, obj: dict[str, Any], name: str) -> list[str]:
        x = _int(obj.get("x"), f"{name}.x", 0, self.width - 1)
        y = _int(obj.get("y"), f"{name}.y", 0, self.height - 1)
        return [str(x), str(y)]

    def move_to(self, action: dict[str, Any], where: str) -> Step:
        # No --sync: it waits for the pointer to move, and a pointer already
        # there never does (a second click on the same spot took 16 s). The
        # steps run one after the other, so the move is done before the click.
        return [XDOTOOL, "mousemove", *self.point(action, where)]

    def plan(self, action: Any, index: int) -> list[Step]:
        """Raises InvalidActionError."""
        where = f"action {index}"
        if not isinstance(action, dict):
            raise InvalidActionError(f"{where}: expected an object")
        kind = action.get("type")
        if kind not in FIELDS:
            raise InvalidActionError(f"{where}: unknown type {kind!r}")
        extra = set(action) - FIELDS[kind] - {"type"}
        missing = FIELDS[kind] - OPTIONAL.get(kind, set()) - set(action)
        if extra or missing:
            raise InvalidActionError(f"{where} ({kind}): unexpected fields {sorted(extra)}, missing {sorted(missing)}")
        steps: list[Step] = getattr(self, f"_{kind}")(action, where)
        if kind != "keypress" and action.get("keys"):
            held = self._held(action, where)
            steps = [[XDOTOOL, "keydown", *held], *steps, [XDOTOOL, "keyup", *held]]
        return steps

    def _held(self, action: dict[str, Any], where: str) -> list[str]:
        keys = action.get("keys")
        if not isinstance(keys, list) or len(keys) > MAX_KEYS:
            raise InvalidActionError(f"{where}: keys must be a list of at most {MAX_KEYS} keys")
        return [_keysym(k) for k in keys]

    def release(self, actions: list[Any]) -> list[Step]:
        """What must be let go of whatever happened: every key a pointer
        action holds and, after a drag, the button (a failed step must not
        leave them down for the session's next call)."""
        holding = [a for a in actions if a.get("type") != "keypress" and a.get("keys")]
        keys = sorted({k for a in holding for k in self._held(a, "release")})
        steps = [[XDOTOOL, "keyup", *keys]] if keys else []
        if any(a.get("type") == "drag" for a in actions):
            steps.append([XDOTOOL, "mouseup", "1"])
        return steps

    def _click(self, action: dict[str, Any], where: str) -> list[Step]:
        button = action.get("button", "left")
        if button not in BUTTONS:
            raise InvalidActionError(f"{where}: unknown button {button!r}")
        return [self.move_to(action, where), [XDOTOOL, "click", BUTTONS[button]]]

    def _double_click(self, action: dict[str, Any], where: str) -> list[Step]:
        return [self.move_to(action, where), [XDOTOOL, "click", "--repeat", "2", "--delay", "80", "1"]]

    def _move(self, action: dict[str, Any], where: str) -> list[Step]:
        return [self.move_to(action, where)]

    def _scroll(self, action: dict[str, Any], where: str) -> list[Step]:
        steps = [self.move_to(action, where)]
        bound = MAX_SCROLL_STEPS * SCROLL_STEP_PX
        # X buttons 4/5 scroll up/down, 6/7 left/right.
        for name, (less, more) in (("scroll_y", ("4", "5")), ("scroll_x", ("6", "7"))):
            px = _int(action.get(name, 0), f"{where}.{name}", -bound, bound)
            count = -(-abs(px) // SCROLL_STEP_PX)
            if count:
                steps.append([XDOTOOL, "click", "--repeat", str(count), "--delay", "20", more if px > 0 else less])
        return steps

    def _type(self, action: dict[str, Any], where: str) -> list[Step]:
        text = action.get("text")
        if not isinstance(text, str) or len(text) > MAX_TEXT or "\x00" in text:
            raise InvalidActionError(f"{where}: text must be a string of at most {MAX_TEXT} characters")
        return [[XDOTOOL, "type", "--delay", "12", "--", text]] if text else []

    def _keypress(self, action: dict[str, Any], where: str) -> list[Step]:
        keys = action.get("keys")
        if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_KEYS:
            raise InvalidActionError(f"{where}: keys must be a list of 1..{MAX_KEYS} keys")
        return [[XDOTOOL, "key", "--clearmodifiers", "+".join(_keysym(k) for k in keys)]]

    def _drag(self, action: dict[str, Any], where: str) -> list[Step]:
        path = action.get("path")
        if not isinstance(path, list) or not 2 <= len(path) <= MAX_PATH:  # noqa: PLR2004 - a drag has two ends
            raise InvalidActionError(f"{where}: path must be a list of 2..{MAX_PATH} points")
        points = []
        for n, p in enumerate(path):
            if not isinstance(p, dict) or set(p) != {"x", "y"}:
                raise InvalidActionError(f"{where}.path[{n}]: expected {{x, y}}")
            points.append(self.point(p, f"{where}.path[{n}]"))
        steps = [[XDOTOOL, "mousemove", *points[0]], [XDOTOOL, "mousedown", "1"]]
        steps += [[XDOTOOL, "mousemove", *p] for p in points[1:]]
        return [*steps, [XDOTOOL, "mouseup", "1"]]

    def _wait(self, action: dict[str, Any], where: str) -> list[Step]:  # noqa: ARG002 - one signature for all
        return [PAUSE]

    def _screenshot(self, action: dict[str, Any], where: str) -> list[Step]:  # noqa: ARG002 - one signature for all
        return []  # the final one is taken anyway


def run(argv: list[str]) -> None:
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=STEP_TIMEOUT_S, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{argv[1]} failed (exit {done.returncode}): {done.stderr.decode(errors='replace')[-400:]}")


def display_size() -> tuple[int, int]:
    out = subprocess.run([XDOTOOL, "getdisplaygeometry"], capture_output=True, timeout=STEP_TIMEOUT_S, check=True)
    width, height = out.stdout.split()
    return int(width), int(height)


def load(raw: str) -> list[Any]:
    try:
        actions = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidActionError(f"actions: not JSON: {exc}") from None
    if not isinstance(actions, list) or len(actions) > MAX_ACTIONS:
        raise InvalidActionError(f"actions: expected a JSON array of at most {MAX_ACTIONS} actions")
    return actions


def wait_for_desktop() -> bool:
    """Whether the display and the browser's window are up, within
    SOCKET_WAIT_S: a session's first call may come while the keeper still
    starts them. When this call saw the window come, the page gets a moment
    to paint."""
    deadline = time.monotonic() + SOCKET_WAIT_S
    while not SOCKET.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    waited = False
    while True:
        found = subprocess.run(BROWSER_WINDOW, capture_output=True, timeout=STEP_TIMEOUT_S, check=False)
        if found.returncode == 0 and found.stdout.strip():
            break
        if time.monotonic() > deadline:
            return False
        waited = True
        time.sleep(0.1)
    if waited:
        time.sleep(FIRST_PAINT_S)
    return True


def act(steps: list[list[Step]], release: list[Step] | None = None) -> bytes:
    """Runs the steps, then takes the screenshot; raises RuntimeError.
    ``release`` runs whatever happened."""
    try:
        for argvs in steps:
            for argv in argvs:
                if argv is PAUSE:
                    time.sleep(WAIT_S)
                else:
                    run(argv)
    finally:
        for argv in release or []:
            subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=STEP_TIMEOUT_S, check=False)
    time.sleep(SETTLE_S)
    shot = subprocess.run(
        SCREENSHOT, stdin=subprocess.DEVNULL, capture_output=True, timeout=STEP_TIMEOUT_S, check=False
    )
    if shot.returncode != 0 or not shot.stdout.startswith(b"\x89PNG"):
        raise RuntimeError(f"screenshot failed (exit {shot.returncode}): {shot.stderr.decode(errors='replace')[-400:]}")
    return shot.stdout


def main(argv: list[str]) -> int:
    if len(argv) != 2:  # noqa: PLR2004 - the program and its one argument
        print("usage: act.py ACTIONS_JSON", file=sys.stderr)
        return 2
    os.environ["DISPLAY"] = DISPLAY
    if not wait_for_desktop():
        print("the desktop (its display and browser) did not come up", file=sys.stderr)
        return 1
    try:
        actions = load(argv[1])
        planner = Planner(*display_size())
        steps = [planner.plan(action, n) for n, action in enumerate(actions)]
        release = planner.release(actions)
    except InvalidActionError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    except (subprocess.SubprocessError, ValueError) as exc:
        print(f"cannot read the display's size: {exc}", file=sys.stderr)
        return 1
    try:
        png = act(steps, release)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"action failed: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(base64.b64encode(png).decode("ascii") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
