// hearth's managed Node.js runtime: Lambda's Runtime API client for the nodejs runtimes.
//
// hearth starts it as `/usr/bin/node /var/runtime/node/bootstrap.mjs` with cwd /var/task. It
// behaves like AWS's runtime (aws-lambda-nodejs-runtime-interface-client, which the nodejs18.x
// to nodejs22.x managed runtimes run), so existing Lambda Node code runs unchanged:
//
// - init: `_HANDLER` is `path/file.export` (the export may be nested, `file.obj.fn`); the file
//   is found under LAMBDA_TASK_ROOT as Lambda finds it (no extension, .js, .mjs, .cjs; CommonJS
//   through require, ES modules through import(), package.json "type" respected), and failures
//   go to /runtime/init/error with Lambda's Runtime.* error types before the process exits;
// - loop: GET /runtime/invocation/next, call handler(event, context, callback), POST the JSON
//   result or {errorType, errorMessage, trace}; async handlers (a returned promise), callback
//   handlers and context.succeed/fail/done all complete an invocation, and a callback waits for
//   the event loop to empty first unless context.callbackWaitsForEmptyEventLoop is false;
// - logs: console.* writes Lambda's `<ISO time>\t<request id>\t<LEVEL>\t<message>` lines to
//   stdout synchronously, so they are in the log before the response is posted.
//
// Node.js 18 or later, built-in modules only.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import util from 'node:util';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const require = createRequire(import.meta.url);
const API = process.env.AWS_LAMBDA_RUNTIME_API;
const TASK_ROOT = process.env.LAMBDA_TASK_ROOT || '/var/task';
const ERROR_TYPE_HEADER = 'Lambda-Runtime-Function-Error-Type';

// ---------------------------------------------------------------------------------------------
// Errors the runtime raises, named as Lambda names them (errorType is the error's name).
// ---------------------------------------------------------------------------------------------

function runtimeError(name) {
  const cls = class extends Error {};
  // On the prototype, so that the stack's first line carries it too, as in Lambda.
  cls.prototype.name = `Runtime.${name}`;
  return cls;
}
const ImportModuleError = runtimeError('ImportModuleError');
const HandlerNotFound = runtimeError('HandlerNotFound');
const MalformedHandlerName = runtimeError('MalformedHandlerName');
const UserCodeSyntaxError = runtimeError('UserCodeSyntaxError');
const NodeJsExit = runtimeError('NodeJsExit');
class UnhandledPromiseRejection extends Error {
  constructor(reason, promise) {
    super(reason);
    this.reason = reason;
    this.promise = promise;
  }
}
UnhandledPromiseRejection.prototype.name = 'Runtime.UnhandledPromiseRejection';

// The body Lambda posts for an error: {errorType, errorMessage, trace}.
function toRapidResponse(error) {
  try {
    if (util.types.isNativeError(error) || isErrorLike(error)) {
      return { errorType: error.name, errorMessage: error.message, trace: error.stack.split('\n') };
    }
    return { errorType: typeof error, errorMessage: String(error), trace: [] };
  } catch {
    return {
      errorType: 'handled',
      errorMessage:
        'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack',
    };
  }
}

function isErrorLike(obj) {
  return Boolean(
    obj && typeof obj.name === 'string' && typeof obj.message === 'string' && typeof obj.stack === 'string',
  );
}

// How Lambda's log line shows an error: a tab, then the error as JSON with its name, message,
// code, own enumerable properties and the stack as an array of lines.
function toFormatted(error) {
  const withProperties = (_key, value) => {
    if (!(value instanceof Error)) return value;
    const out = Object.assign({ errorType: value.name, errorMessage: value.message, code: value.code }, value);
    if (typeof value.stack === 'string') out.stack = value.stack.split('\n');
    return out;
  };
  try {
    return '\t' + JSON.stringify(error, withProperties);
  } catch {
    return '\t' + JSON.stringify(toRapidResponse(error));
  }
}

function intoError(err) {
  return err instanceof Error ? err : new Error(err);
}

// ---------------------------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------------------------

let currentRequestId; // "undefined" in lines logged outside an invocation, as in Lambda

// Write the whole buffer to fd 1 before returning, whatever its blocking mode (a pipe that node
// made non-blocking answers EAGAIN when full: wait a moment and go on).
const pause = new Int32Array(new SharedArrayBuffer(4));
function writeAllSync(fd, text) {
  const buf = Buffer.from(text, 'utf8');
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (err) {
      if (err.code !== 'EAGAIN') throw err;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}

const LEVELS = { TRACE: 1, DEBUG: 2, INFO: 3, WARN: 4, ERROR: 5, FATAL: 6 };

function logLine(level, message, ...params) {
  const line = `${new Date().toISOString()}\t${currentRequestId}\t${level}\t${util.format(message, ...params)}\n`;
  try {
    writeAllSync(1, line);
  } catch {
    // stdout gone: nothing to log to
  }
}

// console.* as Lambda patches it: every level to stdout, filtered by AWS_LAMBDA_LOG_LEVEL.
function patchConsole() {
  const threshold = LEVELS[(process.env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase()] ?? LEVELS.TRACE;
  const logger = (level) => (LEVELS[level] >= threshold ? (msg, ...params) => logLine(level, msg, ...params) : () => {});
  console.trace = logger('TRACE');
  console.debug = logger('DEBUG');
  console.info = logger('INFO');
  console.log = console.info;
  console.warn = logger('WARN');
  console.error = logger('ERROR');
  console.fatal = logger('FATAL');
}

function logError(what, err) {
  console.error(what, toFormatted(intoError(err)));
}

// ---------------------------------------------------------------------------------------------
// The Runtime API client: one kept-alive connection.
// ---------------------------------------------------------------------------------------------

class RuntimeClient {
  constructor(hostPort) {
    const sep = hostPort.lastIndexOf(':');
    this.hostname = hostPort.slice(0, sep).replace(/^\[(.*)\]$/, '$1');
    this.port = Number(hostPort.slice(sep + 1));
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  }

  request(method, apiPath, body, headers = {}) {
    const attempt = (retry) =>
      new Promise((resolve, reject) => {
        const req = http.request(
          {
            hostname: this.hostname,
            port: this.port,
            method,
            path: `/2018-06-01${apiPath}`,
            agent: this.agent,
            headers: body === undefined ? headers : { ...headers, 'Content-Length': body.length },
          },
          (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
            res.on('error', reject);
          },
        );
        req.on('error', (err) => {
          // A kept-alive socket the server closed while idle: the request never got there.
          if (retry && req.reusedSocket && err.code === 'ECONNRESET') resolve(attempt(false));
          else reject(err);
        });
        req.end(body);
      });
    return attempt(true);
  }

  async nextInvocation() {
    const res = await this.request('GET', '/runtime/invocation/next');
    if (res.status !== 200) {
      throw new Error(`GET /runtime/invocation/next: ${res.status} ${res.body.toString()}`);
    }
    return { body: res.body.toString('utf8'), headers: res.headers };
  }

  async post(apiPath, body, headers = {}) {
    const res = await this.request('POST', apiPath, Buffer.from(body, 'utf8'), {
      'Content-Type': 'application/json',
      ...headers,
    });
    if (Math.floor(res.status / 100) !== 2) {
      // The invocation is over for the Runtime API either way: say so and serve the next one.
      process.stderr.write(`Runtime API refused POST ${apiPath}: ${res.status} ${res.body.toString()}\n`);
    }
  }

  postInvocationResponse(id, bodyString) {
    return this.post(`/runtime/invocation/${encodeURIComponent(id)}/response`, bodyString);
  }

  // As Lambda's node runtime: the error document, no error-type header (the Runtime API reports
  // it as Unhandled), and no X-Ray cause header (hearth has no X-Ray).
  postInvocationError(id, error) {
    return this.post(`/runtime/invocation/${encodeURIComponent(id)}/error`, JSON.stringify(toRapidResponse(error)));
  }

  postInitError(error) {
    const response = toRapidResponse(error);
    return this.post('/runtime/init/error', JSON.stringify(response), { [ERROR_TYPE_HEADER]: response.errorType });
  }
}

function lostRuntimeApi(err) {
  process.stderr.write(`hearth node runtime: lost the Runtime API at ${API}: ${err && err.message}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Loading the handler (UserFunction.js in Lambda's runtime)
// ---------------------------------------------------------------------------------------------

function hasPackageJsonTypeModule(folder) {
  // The nearest package.json decides; a node_modules folder or the root ends the search.
  if (folder.endsWith('/node_modules')) return false;
  const pj = path.join(folder, 'package.json');
  if (fs.existsSync(pj)) {
    try {
      return JSON.parse(fs.readFileSync(pj, 'utf8'))?.type === 'module';
    } catch (e) {
      console.warn(`${pj} cannot be read, it will be ignored for ES module detection purposes.`, e);
      return false;
    }
  }
  if (folder === '/') return false;
  return hasPackageJsonTypeModule(path.resolve(folder, '..'));
}

function tryRequire(file) {
  return fs.existsSync(file) ? require(file) : undefined;
}

async function tryImport(file) {
  return fs.existsSync(file) ? import(pathToFileURL(file).href) : undefined;
}

async function loadModule(appRoot, moduleRoot, module) {
  const lambdaStylePath = path.resolve(appRoot, moduleRoot, module);
  // Extensionless files, and .js files outside a "type": "module" package, are CommonJS.
  const extensionless = tryRequire(lambdaStylePath);
  if (extensionless) return extensionless;
  const esm = hasPackageJsonTypeModule(path.dirname(lambdaStylePath));
  if (!esm) {
    const loaded = tryRequire(`${lambdaStylePath}.js`);
    if (loaded) return loaded;
  }
  const loaded =
    (esm && (await tryImport(`${lambdaStylePath}.js`))) ||
    (await tryImport(`${lambdaStylePath}.mjs`)) ||
    tryRequire(`${lambdaStylePath}.cjs`);
  if (loaded) return loaded;
  // Then node's own resolution from the task root (a package in node_modules, say).
  return require(require.resolve(module, { paths: [appRoot, moduleRoot] }));
}

async function loadHandler(appRoot, fullHandler) {
  if (fullHandler.includes('..')) {
    throw new MalformedHandlerName(
      `'${fullHandler}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`,
    );
  }
  // 'dir/sub/file.obj.fn' → module root 'dir/sub/', module 'file', handler path 'obj.fn'.
  const handlerString = path.basename(fullHandler);
  const moduleRoot = fullHandler.substring(0, fullHandler.indexOf(handlerString));
  const match = handlerString.match(/^([^.]*)\.(.*)$/);
  if (!match) throw new MalformedHandlerName('Bad handler');
  const [, module, handlerPath] = match;

  let app;
  try {
    app = await loadModule(appRoot, moduleRoot, module);
  } catch (e) {
    if (e instanceof SyntaxError) throw new UserCodeSyntaxError(e);
    if (e && e.code === 'MODULE_NOT_FOUND') throw new ImportModuleError(e);
    throw e;
  }

  const handler = handlerPath.split('.').reduce((nested, key) => nested && nested[key], app);
  if (!handler) throw new HandlerNotFound(`${fullHandler} is undefined or not exported`);
  if (typeof handler !== 'function') throw new HandlerNotFound(`${fullHandler} is not a function`);
  return handler;
}

// ---------------------------------------------------------------------------------------------
// The invocation loop (Runtime.js, CallbackContext.js and InvokeContext.js in Lambda's runtime)
// ---------------------------------------------------------------------------------------------

// What to do when the event loop empties during an invocation (node's 'beforeExit').
let beforeExit = null;
process.on('beforeExit', () => {
  const listener = beforeExit;
  beforeExit = null;
  if (listener) listener();
});

// What an uncaught exception or unhandled rejection does: fail init, or the invocation.
const onFatal = { uncaughtException: null, unhandledRejection: null };

function serialize(result) {
  return JSON.stringify(result === undefined ? null : result);
}

function buildCallbackContext(client, id, scheduleNext) {
  let completed = false;
  let finished = false;
  let waitForEmptyEventLoop = true;

  const postError = (err) => {
    logError('Invoke Error', err);
    client.postInvocationError(id, err).then(scheduleNext, lostRuntimeApi);
  };
  const complete = (result) => {
    if (completed) {
      console.error('Invocation has already been reported as done. Cannot call complete more than once per invocation.');
      return;
    }
    completed = true;
    let body;
    try {
      body = serialize(result);
    } catch {
      // A circular structure or a BigInt: the invocation fails, as in Lambda.
      postError(new Error('Unable to stringify response body'));
      return;
    }
    client.postInvocationResponse(id, body).then(scheduleNext, lostRuntimeApi);
  };

  const callback = (err, result) => {
    beforeExit = null;
    if (err !== undefined && err !== null) {
      postError(err);
    } else if (!waitForEmptyEventLoop) {
      complete(result);
    } else {
      // Lambda answers once the event loop has nothing left to run.
      beforeExit = () => setImmediate(() => complete(result));
    }
  };
  const done = (err, result) => {
    beforeExit = null;
    if (err !== undefined && err !== null) postError(err);
    else complete(result);
  };

  // Only the first of callback/succeed/fail/done counts.
  const once =
    (fn) =>
    (...args) => {
      if (finished) return;
      finished = true;
      fn(...args);
    };
  const context = {
    get callbackWaitsForEmptyEventLoop() {
      return waitForEmptyEventLoop;
    },
    set callbackWaitsForEmptyEventLoop(value) {
      waitForEmptyEventLoop = value;
    },
    succeed: once((result) => done(null, result)),
    fail: once((err) => (err === undefined || err === null ? done('handled') : done(err, null))),
    done: once(done),
  };
  const markCompleted = () => {
    completed = true;
    finished = true;
  };
  return [once(callback), context, markCompleted];
}

function parseJsonHeader(value, name) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

function attachInvokeData(context, headers) {
  // X-Ray's trace header reaches the function (and the AWS SDKs) through the environment.
  if (headers['lambda-runtime-trace-id']) process.env._X_AMZN_TRACE_ID = headers['lambda-runtime-trace-id'];
  else delete process.env._X_AMZN_TRACE_ID;

  const deadline = Number(headers['lambda-runtime-deadline-ms']);
  return Object.assign(context, {
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parseJsonHeader(headers['lambda-runtime-client-context'], 'ClientContext'),
    identity: parseJsonHeader(headers['lambda-runtime-cognito-identity'], 'CognitoIdentity'),
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    awsRequestId: headers['lambda-runtime-aws-request-id'],
    tenantId: headers['lambda-runtime-aws-tenant-id'],
    getRemainingTimeInMillis: () => deadline - Date.now(),
  });
}

function isPromise(obj) {
  return Boolean(obj && typeof obj.then === 'function');
}

class Runtime {
  constructor(client, handler) {
    this.client = client;
    this.handler = handler;
    this.isAsync = handler.constructor?.name === 'AsyncFunction';
  }

  scheduleIteration() {
    setImmediate(() => this.handleOnce().catch(lostRuntimeApi));
  }

  async handleOnce() {
    const { body, headers } = await this.client.nextInvocation();
    const id = headers['lambda-runtime-aws-request-id'];
    if (!id) throw new Error('GET /runtime/invocation/next: no Lambda-Runtime-Aws-Request-Id header');
    currentRequestId = id;

    const scheduleNext = () => this.scheduleIteration();
    const [callback, callbackContext, markCompleted] = buildCallbackContext(this.client, id, scheduleNext);

    onFatal.uncaughtException = (err) => this.client.postInvocationError(id, err).finally(() => process.exit(129));
    onFatal.unhandledRejection = (err) => this.client.postInvocationError(id, err).finally(() => process.exit(128));

    // The event loop emptied before the handler answered: a non-async handler that never
    // called back answers null; an async one whose promise never settles fails.
    beforeExit = () => {
      markCompleted();
      if (this.isAsync) {
        const err = new NodeJsExit('The handler returned a promise that never settled before the event loop emptied');
        logError('Invoke Error', err);
        this.client.postInvocationError(id, err).then(scheduleNext, lostRuntimeApi);
      } else {
        this.client.postInvocationResponse(id, 'null').then(scheduleNext, lostRuntimeApi);
      }
    };

    try {
      const context = attachInvokeData(callbackContext, headers);
      // A body that is not JSON fails the invocation with the SyntaxError, as in Lambda.
      const result = this.handler(JSON.parse(body), context, callback);
      if (isPromise(result)) {
        result.then(callbackContext.succeed, callbackContext.fail).catch(callbackContext.fail);
      }
    } catch (err) {
      callback(err);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

async function main() {
  patchConsole();
  if (!API) {
    process.stderr.write('hearth node runtime: AWS_LAMBDA_RUNTIME_API is not set\n');
    process.exit(1);
  }
  const client = new RuntimeClient(API);

  onFatal.uncaughtException = (err) => client.postInitError(err).finally(() => process.exit(129));
  onFatal.unhandledRejection = (err) => client.postInitError(err).finally(() => process.exit(128));
  process.on('uncaughtException', (err) => {
    logError('Uncaught Exception', err);
    onFatal.uncaughtException(err).catch(lostRuntimeApi);
  });
  process.on('unhandledRejection', (reason, promise) => {
    const err = new UnhandledPromiseRejection(reason, promise);
    logError('Unhandled Promise Rejection', err);
    onFatal.unhandledRejection(err).catch(lostRuntimeApi);
  });

  let handler;
  try {
    handler = await loadHandler(TASK_ROOT, process.env._HANDLER || '');
  } catch (err) {
    // Lambda's runtime lets the load error escape as an uncaught exception: logged as such,
    // posted to /init/error, exit status 129.
    logError('Uncaught Exception', err);
    await client.postInitError(err).catch(lostRuntimeApi);
    process.exit(129);
  }
  new Runtime(client, handler).scheduleIteration();
}

await main();
