"""AWS from trio: :mod:`gateway.aws.bridge` is the only module that knows the SDK's I/O."""

from gateway.aws.bridge import Aws, AwsError, AwsStatistics, AwsUnavailable, RetryPolicy, open_aws

__all__ = ["Aws", "AwsError", "AwsStatistics", "AwsUnavailable", "RetryPolicy", "open_aws"]
