// Opens a report.html in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core;
// no browser is downloaded) and checks what a reader sees: the page loads with no console error,
// every figure renders a non-empty drawing, and no legend (colour bar) is clipped by its figure.
// Saves a full-page screenshot.
//     node tests/report_browser.mjs RUN/report.html SCREENSHOT.png
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const [reportPath, screenshotPath] = process.argv.slice(2);
if (!reportPath || !screenshotPath) {
    console.error('usage: node tests/report_browser.mjs REPORT.html SCREENSHOT.png');
    process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const profile = mkdtempSync(path.join(os.tmpdir(), 'pathformer-chromium-'));
const failures = [];
// a fresh profile folder (playwright passes it as --user-data-dir)
const browser = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
    const page = await browser.newPage();
    page.on('console', (msg) => {
        if (msg.type() === 'error') failures.push(`console error: ${msg.text()}`);
    });
    page.on('pageerror', (err) => failures.push(`page error: ${err.message}`));
    // The report must be self-contained: any request beyond the file itself is a failure.
    page.on('request', (req) => {
        if (req.url() !== pathToFileURL(path.resolve(reportPath)).href) failures.push(`request: ${req.url()}`);
    });
    await page.goto(pathToFileURL(path.resolve(reportPath)).href, { waitUntil: 'load' });
    const count = await page.locator('div.vl').count();
    if (count === 0) failures.push('the report has no figures');
    // vega-embed renders asynchronously: wait until every figure holds an SVG (or failed)
    await page.waitForFunction(
        () => [...document.querySelectorAll('div.vl, .figure-error')].every(
            (el) => el.classList.contains('figure-error') || el.querySelector('svg')),
        null, { timeout: 30000 }).catch(() => failures.push('figures did not render within 30 s'));
    const figures = await page.evaluate(() => [...document.querySelectorAll('figure')].map((fig) => {
        const svg = fig.querySelector('svg');
        const name = fig.id;
        if (!svg) return { name, error: fig.textContent.slice(0, 200) };
        const box = svg.getBoundingClientRect();
        // drawn marks: paths, rects, lines, symbols with a real size
        const marks = [...svg.querySelectorAll('g.mark-rect path, g.mark-line path, g.mark-rule line, ' +
                                               'g.mark-rect rect, g.mark-tick path, g.mark-text text')];
        const drawn = marks.filter((m) => { const b = m.getBoundingClientRect(); return b.width > 0 || b.height > 0; });
        const clipped = [...svg.querySelectorAll('g.role-legend')].filter((g) => {
            const b = g.getBoundingClientRect();
            return b.left < box.left - 1 || b.right > box.right + 1 || b.top < box.top - 1 || b.bottom > box.bottom + 1;
        }).length;
        const page = document.documentElement.scrollWidth;
        return { name, width: box.width, height: box.height, marks: drawn.length, clipped, overflow: box.right > page + 1 };
    }));
    for (const f of figures) {
        if (f.error) failures.push(`${f.name}: no drawing (${f.error})`);
        else if (!(f.width > 50 && f.height > 50)) failures.push(`${f.name}: drawing is ${f.width}x${f.height}`);
        else if (f.marks === 0) failures.push(`${f.name}: no marks drawn`);
        else if (f.clipped) failures.push(`${f.name}: ${f.clipped} legend(s) clipped`);
        else if (f.overflow) failures.push(`${f.name}: drawing extends past the page`);
    }
    await page.screenshot({ path: screenshotPath, fullPage: true });
    console.log(`report_browser: ${figures.length} figures checked in ${reportPath}; screenshot ${screenshotPath}`);
} finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
}
for (const f of failures) console.error(`report_browser: ${f}`);
process.exit(failures.length ? 1 : 0);
