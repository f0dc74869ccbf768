"""The organisers' pages in a real browser (SPEC §12): Debian's chromium, headless, driven
by Playwright, against `mailer run` serving the shipped examples. What a person sees: the
events, a mail, its preview in a sandboxed frame, a phone's 400 px without sideways
scrolling. With MAILER_SCREENSHOTS=docs/images it also saves the guides' screenshots."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

from tests.browser import (
    CHROMIUM_ARGS,
    SCREENSHOTS_VARIABLE,
    chromium_or_skip,
    shipped_examples_served,
)

EVENT_TITLE = "Utforskande förlabb: Skolnärvaro"


async def test_an_organiser_follows_the_events_to_a_mail_and_its_preview(tmp_path: Path):
    chromium = chromium_or_skip()
    with shipped_examples_served(tmp_path) as base:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium, headless=True, args=CHROMIUM_ARGS
            )
            try:
                await _desktop(browser, base)
                await _phone(browser, base)
            finally:
                await browser.close()


async def _desktop(browser: Browser, base: str) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="sv-SE")
    page = await context.new_page()
    await page.goto(base + "/")
    assert await page.locator("h1").inner_text() == "Evenemang"
    await page.get_by_role("link", name=EVENT_TITLE).click()
    await page.wait_for_url("**/events/forlabb-skolnarvaro")
    await _save(page, "web-event-desktop.png")
    await page.get_by_role("link", name="invitation").click()
    await page.wait_for_url("**/mails/invitation")
    rows = page.locator("tbody tr")
    assert await rows.count() == 5  # everyone in deltagare.csv
    assert "Björn Östlund" in await rows.nth(1).inner_text()
    await _save(page, "web-mail-desktop.png")
    await rows.nth(1).get_by_role("link").click()  # Björn's preview
    await page.wait_for_url("**/preview?to=bjorn.ostlund%40example.org")
    frame = page.locator("iframe")
    assert await frame.get_attribute("sandbox") == ""  # every restriction: no script, no forms
    body = page.frame_locator("iframe").locator("body")
    assert EVENT_TITLE in await body.inner_text() and "Björn" in await body.inner_text()
    assert "Textdelen" in await page.locator("h2").all_inner_texts()
    await _save(page, "web-preview-desktop.png")
    await page.goto(base + "/")
    await _save(page, "web-events-desktop.png")
    await context.close()


async def _phone(browser: Browser, base: str) -> None:
    context = await browser.new_context(
        viewport={"width": 400, "height": 800}, locale="sv-SE", is_mobile=True, has_touch=True
    )
    page = await context.new_page()
    for path in ("/", "/events/forlabb-skolnarvaro", "/events/forlabb-skolnarvaro/timeline"):
        await page.goto(base + path)
        assert await _sideways_overflow(page) == 0, path
    await page.goto(base + "/events/forlabb-skolnarvaro/mails/invitation")
    assert await _sideways_overflow(page) == 0
    await _save(page, "web-mail-phone.png")
    await page.locator("tbody tr").first.get_by_role("link").click()
    await page.wait_for_url("**/preview?to=*")
    assert await _sideways_overflow(page) == 0
    await page.goto(base + "/")
    await _save(page, "web-events-phone.png")
    await context.close()


async def _sideways_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the screen (0: no sideways scrolling)."""
    return int(
        await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
    )


async def _save(page: Page, name: str) -> None:
    folder = os.environ.get(SCREENSHOTS_VARIABLE)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(folder) / name), full_page=True)
