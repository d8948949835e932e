// Saves each Vega-Lite spec NAME.vl.json in a folder as NAME.svg, rendered headless by Vega (the
// npm packages pinned in package.json). Run by `pathformer run` after it writes the report:
//     node scripts/vega_export.mjs RUN/figures
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';

const dir = process.argv[2];
if (!dir) {
    console.error('usage: node vega_export.mjs FOLDER');
    process.exit(2);
}
let failed = 0;
for (const file of readdirSync(dir).filter((f) => f.endsWith('.vl.json')).sort()) {
    const name = file.slice(0, -'.vl.json'.length);
    try {
        const spec = JSON.parse(readFileSync(path.join(dir, file), 'utf8'));
        const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
        writeFileSync(path.join(dir, `${name}.svg`), await view.toSVG());
        view.finalize();
    } catch (err) {
        console.error(`vega_export: ${file}: ${err.message}`);
        failed++;
    }
}
process.exit(failed ? 1 : 0);
