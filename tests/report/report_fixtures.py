"""Constants shared by the report tests."""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# A label that would run script in a page that inserted it as HTML.
HOSTILE_LABEL = '<img src=x onerror="window.__pwned=1">stripes & "dots"</script>'
