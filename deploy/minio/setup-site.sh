#!/usr/bin/env bash
# Prepare the AllMicro Data bucket on two MinIO sites with the MinIO client `mc`:
# bucket, versioning, a least-privilege user for the server, noncurrent-version expiry, and
# one-way bucket replication from site A to site B. Run once, from an admin host.
#
#   SITE_A=https://s3.site-a.example:9000 SITE_B=https://s3.site-b.example:9000 \
#   ROOT_A_USER=… ROOT_A_PASSWORD=… ROOT_B_USER=… ROOT_B_PASSWORD=… \
#   ALLMICRO_SECRET=… REPLICATION_SECRET=… ./setup-site.sh
set -euo pipefail

BUCKET=${BUCKET:-allmicro}
NONCURRENT_DAYS=${NONCURRENT_DAYS:-30}
here=$(cd "$(dirname "$0")" && pwd)

mc alias set site-a "$SITE_A" "$ROOT_A_USER" "$ROOT_A_PASSWORD"
mc alias set site-b "$SITE_B" "$ROOT_B_USER" "$ROOT_B_PASSWORD"

for site in site-a site-b; do
    mc mb --ignore-existing "$site/$BUCKET"
    # Replication needs versions; they also undo an accidental delete or overwrite.
    mc version enable "$site/$BUCKET"
    # Rewritten pyramids and deleted stale chunks leave old versions: keep them a while only.
    mc ilm rule add --noncurrent-expire-days "$NONCURRENT_DAYS" "$site/$BUCKET"
done

# The server's own account on site A: objects of this bucket, nothing else.
mc admin policy create site-a allmicro-rw "$here/allmicro-policy.json"
mc admin user add site-a allmicro "$ALLMICRO_SECRET"
mc admin policy attach site-a allmicro-rw --user allmicro

# Site B receives replicas through a user that may only write them.
mc admin user add site-b allmicro-replication "$REPLICATION_SECRET"
mc admin policy attach site-b readwrite --user allmicro-replication
mc replicate add site-a/"$BUCKET" \
    --remote-bucket "${SITE_B/:\/\//://allmicro-replication:$REPLICATION_SECRET@}/$BUCKET" \
    --replicate "delete,delete-marker,existing-objects"

mc replicate status site-a/"$BUCKET"
echo "Set ALLMICRO_STORAGE_URL=s3://$BUCKET?endpoint=$SITE_A and ALLMICRO_S3_ACCESS_KEY=allmicro."
