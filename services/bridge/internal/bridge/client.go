package bridge

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/kinesislocal"
)

// NewKinesisClient builds the Kinesis client of the kinesis config section:
// static credentials from the variables named by access_key_env and
// secret_key_env when set, else the AWS default chain (environment, shared
// files, SSO, web identity, IMDS).
func NewKinesisClient(ctx context.Context, k config.Kinesis, getenv func(string) string) (*kinesis.Client, error) {
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
	kc, err := kinesislocal.NewClient(ctx, k.Region, k.Endpoint, creds)
	if err != nil {
		return nil, fmt.Errorf("kinesis: %w", err)
	}
	return kc, nil
}
