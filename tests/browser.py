"""A real browser for the tests: Debian's headless Chromium driven through its own
chromedriver (selenium, with the driver's path given so that Selenium Manager never runs and
nothing is downloaded). chromedriver runs on a loopback port as a child of this process, in a
fixed time zone (``TIMEZONE``) and a temporary profile; ``open_browser`` stops it and every
Chromium process it started, by PID. Skipped where they are not installed, unless ``CI`` is set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from configs import free_port
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TIMEZONE = "America/New_York"  # never UTC: the console must show the viewer's local time
LAPTOP = (1200, 800)  # modest, so that the screenshots in docs/console/ stay small
PHONE = (390, 844)
WAIT = 10.0  # seconds a page may take to load, or a script to change it


def require_browser() -> None:
    """Skip (fail when ``CI`` is set) unless Chromium and its chromedriver are installed."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        problem = (f"{' and '.join(missing)} not installed (Debian: apt-get install chromium "
                   "chromium-driver)")
        if os.environ.get("CI"):
            pytest.fail(f"CI: {problem}")
        pytest.skip(problem)


def screenshot_dir(default: Path) -> Path:
    """Where screenshots go: ``PNBRIDGE_SCREENSHOTS`` (relative to the checkout, e.g.
    ``docs/console``) when set, else ``default`` (a temp directory)."""
    chosen = os.environ.get("PNBRIDGE_SCREENSHOTS")
    path = ROOT / chosen if chosen else default
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Browser:
    """One Chromium session on ``base`` (the server under test). Every page it shows is
    kept (URL and HTML, ``sources``) for checks that span all of them."""

    driver: webdriver.Chrome
    base: str
    shots: Path
    sources: list[tuple[str, str]] = field(default_factory=list)

    def go(self, path: str) -> str:
        """Open ``base + path``; the page's HTML."""
        self.driver.get(self.base + path)
        return self.loaded()

    def loaded(self) -> str:
        """Wait for the page to be loaded; keep and return its HTML."""
        WebDriverWait(self.driver, WAIT).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        html = self.driver.page_source
        self.sources.append((self.driver.current_url, html))
        return html

    @property
    def path(self) -> str:
        """The current page's URL without ``base``."""
        return self.driver.current_url.removeprefix(self.base)

    def one(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def submit(self, form: str | WebElement, **fields: str) -> str:
        """Fill ``fields`` of ``form`` (a CSS selector or the element), click its submit
        button, wait for the next page; its HTML."""
        element = self.one(form) if isinstance(form, str) else form
        for name, value in fields.items():
            field_ = element.find_element(By.NAME, name)
            field_.clear()
            field_.send_keys(value)
        return self.follow(element.find_element(By.CSS_SELECTOR, "button[type=submit]"))

    def follow(self, element: WebElement) -> str:
        """Click ``element`` (a link or a submit button), wait for the next page; its HTML."""
        # A mark on the old page's window: gone once the next page has replaced it. (Waiting
        # for an element of the old page to go stale races with chromedriver, which may
        # answer "unknown error" while the page changes.)
        self.driver.execute_script("window.pnbridgeOldPage = true")
        element.click()
        WebDriverWait(self.driver, WAIT, ignored_exceptions=(WebDriverException,)).until(
            lambda d: d.execute_script("return !window.pnbridgeOldPage"))
        return self.loaded()

    def screenshot(self, name: str) -> Path:
        """The visible part of the page as ``shots/console-NAME.png``."""
        path = self.shots / f"console-{name}.png"
        assert self.driver.save_screenshot(str(path)), f"no screenshot {path}"
        return path

    @contextlib.contextmanager
    def size(self, width: int, height: int) -> Iterator[None]:
        """The window at ``width`` x ``height`` CSS pixels for a while (e.g. ``PHONE``)."""
        self.driver.set_window_size(width, height)
        try:
            yield
        finally:
            self.driver.set_window_size(*LAPTOP)

    def text_of_column(self, table: WebElement, column: int) -> list[str]:
        """The texts of one column of ``table``'s body rows."""
        return [row.find_elements(By.CSS_SELECTOR, "td")[column].text
                for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]


def _children() -> dict[int, list[int]]:
    """Every process's children, by parent PID (from /proc)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """The PIDs of ``pid``'s children, theirs, and so on."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        children = tree.get(todo.pop(), [])
        found += children
        todo += children
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.contextmanager
def open_browser(base: str, shots: Path) -> Iterator[Browser]:
    """Chromium, headless, at ``LAPTOP`` size, in ``TIMEZONE``, with a temporary profile,
    driven through chromedriver on a free loopback port; every process stopped at the end."""
    require_browser()
    profile = tempfile.mkdtemp(prefix="pnbridge-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--no-first-run", "--disable-extensions",
                     "--hide-scrollbars", f"--user-data-dir={profile}",
                     f"--window-size={LAPTOP[0]},{LAPTOP[1]}"):
        options.add_argument(argument)
    log = Path(profile).with_suffix(".chromedriver.log")
    service = Service(executable_path=CHROMEDRIVER, port=free_port(), log_output=str(log),
                      env={**os.environ, "TZ": TIMEZONE})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # Selenium Manager, should anything call it
        driver = webdriver.Chrome(service=service, options=options)
    assert service.process is not None
    started = [service.process.pid, *descendants(service.process.pid)]
    try:
        yield Browser(driver, base, shots)
    finally:
        started += descendants(service.process.pid)
        with contextlib.suppress(WebDriverException):
            driver.quit()
        for pid in started:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        service.process.wait(5)
        shutil.rmtree(profile, ignore_errors=True)
