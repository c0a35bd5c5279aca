"""AWS APIs from trio: the one place that knows how the AWS SDK does its I/O.

The SDK is ``aiobotocore`` (3.9 or newer) with its ``httpx2`` transport, which runs on
trio through ``anyio``: no asyncio loop, no thread per call. It was chosen over
``aioboto3`` through ``trio-asyncio`` by a measurement (``bench/aws_bridge.py``, results in
``bench/results/aws_bridge.md``). Nothing else in the gateway imports ``aiobotocore``,
``botocore`` or ``asyncio`` for AWS; callers see plain dicts and this module's errors.

Guarantees:

* **Errors are translated here, once.** A call either returns the operation's response
  (a ``dict`` without ``ResponseMetadata``) or raises one of:

  - :class:`AwsUnavailable` (a :class:`gateway.errors.StoreUnavailable`, retryable):
    throttling (``ThrottlingException``, ``ProvisionedThroughputExceededException``,
    ``RequestLimitExceeded``), transaction conflicts, 5xx answers, connection errors and
    timeouts, once the retries below are used up;
  - :class:`AwsError` (a :class:`gateway.errors.GatewayError`, code ``internal``): every
    other answer (a failed condition, a missing table, a validation error) and client-side
    mistakes (an unknown operation, bad parameters). ``aws_code`` and ``response`` say
    what AWS said.

* **Retries.** A retryable failure is retried up to ``RetryPolicy.attempts`` tries in
  all, sleeping a "full jitter" backoff (uniform in ``[0, min(cap, base * 2**n)]``)
  between tries. Each try has a trio deadline (``RetryPolicy.timeout``) on top of the
  SDK's connect and read timeouts, so no call hangs forever. Retrying is safe only for
  idempotent requests: every DynamoDB request the store sends is (conditional writes
  that accept their own earlier success). The SDK's own retries are off, so every try is
  visible in :meth:`Aws.statistics`.

* **Cancellation** is trio's: a cancelled call raises ``trio.Cancelled`` at once; the
  HTTP connection it was using is closed (never reused half-read), and the client stays
  usable. Whether a cancelled write reached AWS is unknown, as with any timeout.

* **Presigned URLs** (:meth:`Aws.presign`) are computed locally with the same client and
  credentials; S3 URLs are always SigV4.

* **Credentials** are explicit (``access_key``/``secret_key``) or botocore's usual chain
  (environment, config files, ECS container or EC2 instance metadata). Tests always pass
  them explicitly so that no metadata endpoint is ever asked.

``open_aws`` loads the SDK's service models in a worker thread the first time a service
is used (about 0.1 s), not on the event loop.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import msgspec
import trio
from aiobotocore.config import AioConfig
from aiobotocore.httpxsession import HttpxSession
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    HTTPClientError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from gateway.errors import ErrorCode, GatewayError, StoreUnavailable

_T = TypeVar("_T")

__all__ = ["Aws", "AwsError", "AwsStatistics", "AwsUnavailable", "RetryPolicy", "open_aws"]

THROTTLING = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",  # S3
        "ThrottlingError",  # a transaction's cancellation reason
        "ProvisionedThroughputExceeded",
    }
)
"""AWS error codes that mean "too fast, try again later"."""

TRANSIENT = frozenset(
    {
        "TransactionConflictException",
        "TransactionConflict",  # a transaction's cancellation reason
        "TransactionInProgressException",
        "InternalServerError",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
"""Other AWS error codes worth a retry (conflicts and server-side faults)."""


class AwsError(GatewayError):
    """AWS refused a request for a reason a retry does not change (or the call was wrong).

    ``aws_code`` is AWS's error code (``"ConditionalCheckFailedException"``,
    ``"ResourceNotFoundException"``, ...) or the client-side exception's class name;
    ``response`` is the parsed error response (``{}`` for client-side errors), e.g. with
    ``CancellationReasons`` for a cancelled DynamoDB transaction.
    """

    code = ErrorCode.INTERNAL

    def __init__(
        self, message: str, *, aws_code: str, operation: str, response: Mapping[str, Any]
    ) -> None:
        super().__init__(message)
        self.aws_code = aws_code
        self.operation = operation
        self.response: Mapping[str, Any] = response


class AwsUnavailable(StoreUnavailable):
    """AWS could not be reached or asked us to slow down, on every try. Retryable."""

    def __init__(self, message: str, *, aws_code: str, operation: str) -> None:
        super().__init__(message)
        self.aws_code = aws_code
        self.operation = operation


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How retryable failures are retried (see the module docstring)."""

    attempts: int = 6  # tries in all, the first included
    base: float = 0.025  # seconds: the backoff ceiling before the second try
    cap: float = 1.0  # seconds: the largest backoff ceiling
    timeout: float = 10.0  # seconds: trio deadline of one try
    connect_timeout: float = 2.0  # seconds: the SDK's TCP connect timeout
    read_timeout: float = 8.0  # seconds: the SDK's socket read timeout

    def backoff(self, retry: int) -> float:
        """Seconds to sleep before retry number ``retry`` (0-based): full jitter."""
        return random.uniform(0.0, min(self.cap, self.base * 2.0**retry))


class AwsStatistics(msgspec.Struct):
    requests: int = 0  # tries sent (each retry counts)
    retries: int = 0  # tries after a retryable failure
    throttled: int = 0  # tries answered with a throttling error
    unavailable: int = 0  # calls that raised AwsUnavailable
    errors: int = 0  # calls that raised AwsError


class _Failure(Exception):
    """One try's outcome, classified: ``retryable``, AWS's code, a message, the response."""

    def __init__(
        self, retryable: bool, aws_code: str, message: str, response: Mapping[str, Any]
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.aws_code = aws_code
        self.message = message
        self.response = response


def classify(exc: Exception) -> _Failure | None:
    """Classify an SDK exception; None for exceptions that are not the SDK's."""
    if isinstance(exc, ClientError):
        response: Mapping[str, Any] = exc.response
        error = response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        retryable = code in THROTTLING or code in TRANSIENT or status >= 500
        if code == "TransactionCanceledException":
            reasons = [str(r.get("Code", "None")) for r in response.get("CancellationReasons", [])]
            failed = [r for r in reasons if r != "None"]
            retryable = bool(failed) and all(r in THROTTLING or r in TRANSIENT for r in failed)
            if retryable and any(r in THROTTLING for r in failed):
                code = "ThrottlingError"
        message = str(error.get("Message", "")) or str(exc)
        return _Failure(retryable, code, message, response)
    if isinstance(exc, BotoConnectionError | HTTPClientError | ChecksumError):
        return _Failure(True, type(exc).__name__, str(exc), {})
    if isinstance(exc, BotoCoreError):
        return _Failure(False, type(exc).__name__, str(exc), {})
    if isinstance(exc, OSError):
        return _Failure(True, type(exc).__name__, str(exc) or repr(exc), {})
    return None


class Aws:
    """AWS API clients (one per service, made on first use) behind trio-native calls.

    Make it with :func:`open_aws`. Any number of tasks may call at once; each call uses
    one pooled HTTP connection (at most ``max_connections`` per service).
    """

    def __init__(
        self,
        session: AioSession,
        stack: AsyncExitStack,
        *,
        endpoint_url: str | None,
        region: str,
        config: AioConfig,
        credentials: dict[str, str],
        retry: RetryPolicy,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self.retry = retry
        self._session = session
        self._stack = stack
        self._config = config
        self._credentials = credentials
        self._clients: dict[str, Any] = {}
        self._lock = trio.Lock()
        self._closed = False
        self._stats = AwsStatistics()

    async def _client(self, service: str) -> Any:
        if self._closed:
            raise AwsError(
                "the AWS bridge is closed", aws_code="Closed", operation=service, response={}
            )
        client = self._clients.get(service)
        if client is not None:
            return client
        async with self._lock:
            if service not in self._clients:
                maker = self._session.create_client(
                    service,
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=self._config,
                    **self._credentials,
                )
                try:
                    client = await _isolated(self._stack.enter_async_context, maker)
                except Exception as exc:  # bad region, unknown service, ...: not retried
                    if (failure := classify(exc)) is None:
                        raise
                    self._stats.errors += 1
                    raise AwsError(
                        f"{service}: cannot make a client: {failure.aws_code}: {failure.message}",
                        aws_code=failure.aws_code,
                        operation="create_client",
                        response={},
                    ) from exc
                self._clients[service] = client
            return self._clients[service]

    async def call(self, service: str, operation: str, /, **params: Any) -> dict[str, Any]:
        """Run ``operation`` (the SDK's method name, e.g. ``"put_item"``) with retries."""
        client = await self._client(service)
        method = getattr(client, operation, None)
        if operation.startswith("_") or operation not in client.meta.method_to_api_mapping:
            method = None
        if method is None:
            self._stats.errors += 1
            raise AwsError(
                f"{service}: no operation {operation!r}",
                aws_code="UnknownOperation",
                operation=operation,
                response={},
            )
        retry = self.retry
        failure: _Failure | None = None
        for attempt in range(max(1, retry.attempts)):
            if attempt:
                self._stats.retries += 1
                await trio.sleep(retry.backoff(attempt - 1))
            self._stats.requests += 1
            try:
                with trio.fail_after(retry.timeout):
                    response: dict[str, Any] = await _isolated(method, **params)
            except trio.TooSlowError:
                failure = _Failure(True, "Timeout", f"no answer within {retry.timeout} s", {})
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                if failure.aws_code in THROTTLING:
                    self._stats.throttled += 1
                if not failure.retryable:
                    self._stats.errors += 1
                    raise AwsError(
                        f"{service} {operation}: {failure.aws_code}: {failure.message}",
                        aws_code=failure.aws_code,
                        operation=operation,
                        response=failure.response,
                    ) from exc
            else:
                response.pop("ResponseMetadata", None)
                return response
        assert failure is not None
        self._stats.unavailable += 1
        raise AwsUnavailable(
            f"{service} {operation} at {self.endpoint_url or self.region}: "
            f"{failure.aws_code}: {failure.message} ({retry.attempts} tries)",
            aws_code=failure.aws_code,
            operation=operation,
        )

    async def presign(
        self, service: str, operation: str, /, *, expires_s: int, **params: Any
    ) -> str:
        """A presigned URL of ``operation`` (the SDK's method name, e.g. ``"put_object"``)
        with ``params``, valid ``expires_s`` seconds: pure computation with the bridge's
        credentials (resolving them may ask the credential chain once); no request is
        sent, nothing is retried. Client-side mistakes raise :class:`AwsError`; credentials
        not resolved within ``RetryPolicy.timeout`` raise :class:`AwsUnavailable`.

        S3 URLs are always signed with SigV4, also in the regions where botocore would
        choose SigV2 for presigning (``us-east-1`` among them): SigV2 signs neither
        ``Content-Length`` nor the ``x-amz-*``/conditional headers a caller may require."""
        client = await self._client(service)
        if operation.startswith("_") or operation not in client.meta.method_to_api_mapping:
            self._stats.errors += 1
            raise AwsError(
                f"{service}: no operation {operation!r}",
                aws_code="UnknownOperation",
                operation=operation,
                response={},
            )
        if service == "s3":
            client.meta.events.register_first(
                "choose-signer.s3", _keep_sigv4, unique_id="gateway-sigv4"
            )
        try:
            with trio.fail_after(self.retry.timeout):
                url: str = await _isolated(
                    client.generate_presigned_url, operation, Params=params, ExpiresIn=expires_s
                )
        except trio.TooSlowError:
            self._stats.unavailable += 1
            raise AwsUnavailable(
                f"{service} presign {operation}: no credentials within {self.retry.timeout} s",
                aws_code="Timeout",
                operation=operation,
            ) from None
        except Exception as exc:
            if (failure := classify(exc)) is None:
                raise
            self._stats.errors += 1
            raise AwsError(
                f"{service} presign {operation}: {failure.aws_code}: {failure.message}",
                aws_code=failure.aws_code,
                operation=operation,
                response=failure.response,
            ) from exc
        return url

    async def dynamodb(self, operation: str, /, **params: Any) -> dict[str, Any]:
        """One DynamoDB API call, e.g. ``await aws.dynamodb("get_item", TableName=...)``."""
        return await self.call("dynamodb", operation, **params)

    def statistics(self) -> AwsStatistics:
        """A snapshot of the counters (tries, retries, throttled tries, failed calls)."""
        return msgspec.structs.replace(self._stats)


def _keep_sigv4(signature_version: str, **_: Any) -> str:
    """``choose-signer.s3`` handler run before botocore's: keep the client's signature
    version (SigV4) for presigned URLs instead of botocore's SigV2 default in legacy
    regions. Requests the bridge sends are signed with SigV4 either way."""
    return signature_version


async def _isolated(fn: Callable[..., Awaitable[_T]], /, *args: Any, **kwargs: Any) -> _T:
    """``await fn(*args, **kwargs)`` in a child task, i.e. in a contextvars context of its own.

    botocore keeps per-call state in a ContextVar that it sets and resets around every call
    and client creation; tasks that share one ``contextvars.Context`` (pytest-trio runs all
    fixtures in one) would reset each other's and fail deep in the SDK. A child task costs
    a few microseconds against milliseconds per request. Errors and trio cancellation
    reach the caller as if ``fn`` had run in its own task.
    """
    result: list[_T] = []
    error: list[Exception] = []

    async def child() -> None:
        try:
            result.append(await fn(*args, **kwargs))
        except Exception as exc:
            error.append(exc)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
    except BaseExceptionGroup as group:
        if group.split(trio.Cancelled)[1] is None:  # only Cancelled: so are we
            await trio.lowlevel.checkpoint()  # raises our own Cancelled
        raise
    if error:
        raise error[0]
    return result[0]


@asynccontextmanager
async def open_aws(
    endpoint_url: str | None,
    region: str,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    retry: RetryPolicy | None = None,
    max_connections: int = 32,
) -> AsyncIterator[Aws]:
    """An :class:`Aws` for ``region`` (and ``endpoint_url``, e.g. a local moto server, or
    None for AWS itself); its clients and connections are closed on exit."""
    retry = retry or RetryPolicy()
    config = AioConfig(
        http_session_cls=HttpxSession,  # anyio primitives: runs on trio
        retries={"mode": "standard", "total_max_attempts": 1},  # we retry, see above
        connect_timeout=retry.connect_timeout,
        read_timeout=retry.read_timeout,
        max_pool_connections=max_connections,
        warm_up_loader_caches=True,  # load the service models in a worker thread
    )
    session = AioSession()
    session.set_default_client_config(config)  # the credential chain uses anyio too
    credentials: dict[str, str] = {}
    if access_key is not None and secret_key is not None:
        credentials = {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key}
    async with AsyncExitStack() as stack:
        aws = Aws(
            session,
            stack,
            endpoint_url=endpoint_url,
            region=region,
            config=config,
            credentials=credentials,
            retry=retry,
        )
        try:
            yield aws
        finally:
            aws._closed = True
            with trio.CancelScope(shield=True), trio.move_on_after(retry.timeout):
                await stack.aclose()
