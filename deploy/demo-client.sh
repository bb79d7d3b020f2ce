#!/bin/sh
# The demo client: the main job against the three regions, with the AWS CLI's flags.
set -eu
run() { echo "\$ meridian kms $*"; meridian kms "$@"; }
key=$(meridian kms create-key --description "compose demo" --query KeyMetadata.KeyId --output text)
echo "created key $key in us-east-1 (the cluster file's first region)"
printf 'hello from docker-compose' > /tmp/secret.txt
run encrypt --key-id "$key" --plaintext fileb:///tmp/secret.txt \
  --encryption-context app=demo --query CiphertextBlob --output text > /tmp/blob.b64
base64 -d /tmp/blob.b64 > /tmp/blob.bin
run decrypt --ciphertext-blob fileb:///tmp/blob.bin --encryption-context app=demo \
  --query Plaintext --output text | base64 -d
echo
for region in us-east-1 eu-west-1 ap-southeast-2; do
  run --region "$region" generate-random --number-of-bytes 16 --query Region --output text
done
