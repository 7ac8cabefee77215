"""A real headless Chromium for the dashboard's browser tests (Debian's chromium and
chromedriver, driven by selenium): one browser for the whole session, started once.

* `browser`: the session's driver (a fresh profile under the session's tmp dir,
  1280x900, the flags a root user on a shared CI machine needs);
* `testid(name)`: the locator of an element by its `data-testid`;
* `wait_for(driver, condition, what)`: wait on a condition the page reaches, never
  sleep; elements re-rendered by the page's polling (stale) are simply retried;
* `sign_in` / `text_of` / `screenshot`: what every dashboard test does;
* `refresh_until(driver, button, condition, what)`: for a panel the page reads
  only every 10 or 30 s: its "refresh" pressed until the condition holds.

Screenshots go to `test-output/dashboard/<name>.png` under the repository root
(ignored by git), so a CI run keeps a picture of every page it checked.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    JavascriptException,
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMEDRIVER: Final = Path("/usr/bin/chromedriver")
REPO_ROOT: Final = Path(__file__).resolve().parents[2]
SCREENSHOTS: Final = REPO_ROOT / "test-output" / "dashboard"
WIDTH: Final = 1280
HEIGHT: Final = 900
WAIT_S: Final = 45.0  # a bound on a condition the page reaches, not an expectation
RETRIES: Final = 5  # reads of an element the page re-rendered meanwhile
FLAGS: Final = (
    "--headless=new",
    "--no-sandbox",  # root on the CI machine: Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # a container's /dev/shm is small
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # nothing but the page's own requests
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)

T = TypeVar("T")


def _installed() -> bool:
    return CHROMIUM.exists() and (CHROMEDRIVER.exists() or shutil.which("chromedriver") is not None)


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if not _installed():
        # Fail, never skip (as for mosquitto): a green run without a browser proves nothing.
        pytest.fail("chromium and chromedriver are not installed: run scripts/setup.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log))
    driver = webdriver.Chrome(options=options, service=service)  # never Selenium Manager
    driver.set_window_size(WIDTH, HEIGHT)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def testid(name: str) -> tuple[str, str]:
    return By.CSS_SELECTOR, f'[data-testid="{name}"]'


def wait_for(
    driver: WebDriver, condition: Callable[[], T | None], what: str, timeout: float = WAIT_S
) -> T:
    """`condition()` once it is truthy; elements that vanish or re-render meanwhile
    (the page polls) count as not yet."""
    wait = WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.1,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )
    try:
        found = wait.until(lambda _: condition())
    except TimeoutException:
        raise AssertionError(f"the page never showed {what}") from None
    assert found is not None  # `until` returns only a truthy value
    return found


def find(driver: WebDriver | WebElement, name: str) -> WebElement:
    return driver.find_element(*testid(name))


def text_of(driver: WebDriver | WebElement, name: str) -> str | None:
    """The visible text of the element `name`, or None while there is none (an
    element the page replaced between finding and reading is looked up again)."""
    for _ in range(RETRIES):
        try:
            return find(driver, name).text
        except NoSuchElementException:
            return None
        except StaleElementReferenceException:
            continue
    return None


def cell_text(driver: WebDriver, row: str, cell: str) -> str | None:
    """The text of `cell` within the element `row` (a table row), or None."""
    for _ in range(RETRIES):
        try:
            return find(find(driver, row), cell).text
        except NoSuchElementException:
            return None
        except StaleElementReferenceException:
            continue
    return None


def wait_text(driver: WebDriver, row: str, cell: str, expected: str) -> None:
    """Wait until `cell` within `row` reads `expected`."""
    wait_for(
        driver,
        lambda: cell_text(driver, row, cell) == expected,
        f"{row} {cell} = {expected!r} (now {cell_text(driver, row, cell)!r})",
    )


def present(driver: WebDriver | WebElement, name: str) -> bool:
    return bool(driver.find_elements(*testid(name)))


def polls(driver: WebDriver) -> int:
    """How many refreshes the current document has finished (0 after a load)."""
    try:
        value = driver.execute_script("return document.body.dataset.polls || '0'")
    except JavascriptException:
        return 0
    return int(value)


def open_page(driver: WebDriver, hash_route: str) -> None:
    """Navigate within the signed-in page (no reload when the page is loaded already)."""
    driver.execute_script("location.hash = arguments[0]", hash_route)
    wait_for(
        driver, lambda: driver.execute_script("return location.hash") == hash_route, hash_route
    )


def refresh_until(
    driver: WebDriver, button: str, condition: Callable[[], T | None], what: str
) -> T:
    """`condition()` once it is truthy, pressing `button` (a panel's "refresh")
    and waiting for a whole refresh after the press before each look."""
    found: list[T] = []

    def pressed_and_holds() -> bool:
        before = polls(driver)
        find(driver, button).click()
        wait_for(driver, lambda: polls(driver) >= before + 2, f"a refresh after {button}")
        value = condition()
        if value:
            found.append(value)
        return bool(value)

    wait_for(driver, pressed_and_holds, what)
    return found[-1]


def submit_login(
    driver: WebDriver,
    api_url: str,
    key: str,
    hash_route: str,
    poll_ms: int = 250,
    kind: str = "key",
) -> None:
    """A fresh page load, signed out, then the key (`kind="token"`: a bearer
    token) typed into the login form and sent."""
    driver.get(f"{api_url}/dashboard?poll_ms={poll_ms}{hash_route}")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    wait_for(driver, lambda: find(driver, "login").is_displayed(), "the login form")
    assert not find(driver, "nav").is_displayed()  # signed out: nothing but the form
    Select(find(driver, "login-kind")).select_by_value(kind)
    find(driver, "login-key").send_keys(key)
    find(driver, "login-submit").click()


def sign_in(
    driver: WebDriver,
    api_url: str,
    key: str,
    hash_route: str,
    poll_ms: int = 250,
    kind: str = "key",
) -> None:
    """`submit_login`, then wait for the signed-in page's first refresh."""
    submit_login(driver, api_url, key, hash_route, poll_ms, kind)
    wait_for(driver, lambda: find(driver, "logout").is_displayed(), "a signed-in page")
    assert not find(driver, "login").is_displayed()
    wait_for(driver, lambda: polls(driver) > 0, "a first refresh")


def screenshot(driver: WebDriver, name: str) -> Path:
    """The whole page (the window stretched to its height for the shot), as a PNG."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(WIDTH, min(max(height + 100, HEIGHT), 4000))
    try:
        assert driver.save_screenshot(str(path)), path
    finally:
        driver.set_window_size(WIDTH, HEIGHT)
    return path
