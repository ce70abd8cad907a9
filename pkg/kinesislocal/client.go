package kinesislocal

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/gerritflow/gerritflow/pkg/config"
)

// Region is the region the emulator's streams live in (its AWS_REGION default).
const Region = "us-east-1"

// NewClient builds an aws-sdk-go-v2 Kinesis client.
//
//   - region "" = $AWS_REGION, then $AWS_DEFAULT_REGION; an error if neither is set.
//   - endpoint "" = the SDK's default endpoint resolution for the region (real AWS);
//     otherwise an absolute http(s) URL used as BaseEndpoint (e.g. the emulator).
//   - creds nil = static credentials from $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY
//     (and $AWS_SESSION_TOKEN); an error if they are not set. The full AWS default
//     chain (profiles, SSO, IMDS, web identity) needs the aws-sdk-go-v2/config
//     module: load it there and pass cfg.Credentials.
//
// Retries: standard retry mode, 5 attempts, backoff capped at 5s, no client-side
// retry quota (the token bucket can fail calls outright after a burst of throttling,
// which a long-running poller must not suffer).
func NewClient(ctx context.Context, region, endpoint string, creds aws.CredentialsProvider) (*kinesis.Client, error) {
	_ = ctx // reserved: nothing is resolved over the network here
	if region == "" {
		region = os.Getenv("AWS_REGION")
	}
	if region == "" {
		region = os.Getenv("AWS_DEFAULT_REGION")
	}
	if region == "" {
		return nil, errors.New("kinesislocal: NewClient: no region (argument, AWS_REGION or AWS_DEFAULT_REGION)")
	}
	if creds == nil {
		id, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
		if id == "" || secret == "" {
			return nil, errors.New("kinesislocal: NewClient: no credentials provider and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY not set")
		}
		creds = credentials.NewStaticCredentialsProvider(id, secret, os.Getenv("AWS_SESSION_TOKEN"))
	}
	if _, static := creds.(credentials.StaticCredentialsProvider); !static && !aws.IsCredentialsProvider(creds, (*aws.CredentialsCache)(nil)) {
		creds = aws.NewCredentialsCache(creds)
	}
	o := kinesis.Options{
		Region:      region,
		Credentials: creds,
		Retryer: retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = 5
			so.MaxBackoff = 5 * time.Second
			so.RateLimiter = ratelimit.None
		}),
	}
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("kinesislocal: NewClient: endpoint %q is not an absolute http(s) URL", endpoint)
		}
		o.BaseEndpoint = aws.String(endpoint)
	}
	return kinesis.New(o), nil
}

// ClientFor builds the Kinesis client of the kinesis config section:
// static credentials from the variables named by access_key_env and
// secret_key_env when set, else the AWS default chain (environment, shared
// files, SSO, web identity, IMDS).
func ClientFor(ctx context.Context, k config.Kinesis, getenv func(string) string) (*kinesis.Client, error) {
	var creds aws.CredentialsProvider
	switch {
	case k.AccessKeyEnv != "" || k.SecretKeyEnv != "":
		id, secret := getenv(k.AccessKeyEnv), getenv(k.SecretKeyEnv)
		if k.AccessKeyEnv == "" || id == "" {
			return nil, fmt.Errorf("kinesis.access_key_env: no access key in $%s", k.AccessKeyEnv)
		}
		if k.SecretKeyEnv == "" || secret == "" {
			return nil, fmt.Errorf("kinesis.secret_key_env: no secret key in $%s", k.SecretKeyEnv)
		}
		creds = credentials.NewStaticCredentialsProvider(id, secret, "")
	default:
		cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(k.Region))
		if err != nil {
			return nil, fmt.Errorf("kinesis: AWS default credentials: %w", err)
		}
		creds = cfg.Credentials
	}
	kc, err := NewClient(ctx, k.Region, k.Endpoint, creds)
	if err != nil {
		return nil, fmt.Errorf("kinesis: %w", err)
	}
	return kc, nil
}
