/**
 * Standard Schema validation (zod, valibot, arktype, ...): one function for requests and
 * replies. A request that fails is INVALID_ARGUMENT with the schema's issues in `details`;
 * a reply that fails is INTERNAL (the handler broke its own contract).
 */
import type { StandardSchemaV1 } from '@standard-schema/spec';
import { createError, ErrorCode, Status } from '../errors.js';

export interface IssueDetail {
  message: string;
  path?: Array<string | number>;
}

function issuesToDetails(issues: ReadonlyArray<StandardSchemaV1.Issue>): IssueDetail[] {
  return issues.map((i) => {
    const d: IssueDetail = { message: i.message };
    if (i.path !== undefined) d.path = i.path.map((p) => (typeof p === 'object' && p !== null ? (p.key as string | number) : (p as string | number)));
    return d;
  });
}

export async function validate(schema: StandardSchemaV1, value: unknown, what: 'request' | 'reply'): Promise<unknown> {
  let result = schema['~standard'].validate(value);
  if (result instanceof Promise) result = await result;
  if (result.issues !== undefined) {
    const details = { issues: issuesToDetails(result.issues) };
    const first = details.issues[0];
    const where = first?.path?.length ? ` at ${first.path.join('.')}` : '';
    if (what === 'request') throw createError(ErrorCode.VALIDATION, `invalid request${where}: ${first?.message ?? 'failed validation'}`, { details });
    throw createError(ErrorCode.VALIDATION, `invalid reply${where}: ${first?.message ?? 'failed validation'}`, { details, status: Status.INTERNAL });
  }
  return result.value;
}
