import type { TestProject } from 'vitest/node';
import { resolveServices } from './services.js';

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
    redisUrl: string;
  }
}

/** Finds Postgres and Redis once for the whole run (env URLs, local defaults, or testcontainers). */
export default async function setup(project: TestProject) {
  const services = await resolveServices();
  project.provide('databaseUrl', services.databaseUrl);
  project.provide('redisUrl', services.redisUrl);
  return services.stop;
}
