// tsc does not copy non-TS assets; the store loads its Lua scripts from beside its compiled module.
import { cpSync } from 'node:fs';
cpSync('src/store/lua', 'dist/store/lua', { recursive: true });
