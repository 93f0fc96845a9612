# The pipeline's container image, one image for both places the pipeline runs on GCP:
#   * Airflow task pods (DAG setting launcher=kubernetes): `python -m pipeline.run --stages ...`,
#     because Cloud Composer's workers cannot host the TFX 1.16 stack next to Airflow;
#   * Dataflow workers (--sdk_container_image): the base is Beam's own SDK image, whose boot
#     entrypoint Dataflow starts, so workers run exactly the stack the launcher ran.
# Build and push (from the checkout):
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/ml-pipeline:TAG .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/ml-pipeline:TAG
FROM apache/beam_python3.11_sdk:2.60.0

ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONWARNINGS=ignore::FutureWarning \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/pipeline
# Dependencies first (a layer that changes only with the lock), then the code.
COPY requirements/pipeline.lock requirements/pipeline.lock
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY pipeline/ pipeline/
COPY transforms/ transforms/
COPY schemas/ schemas/
# Editable, like `make setup`: the committed schemas/ stay where the code looks for them.
RUN pip install -c requirements/pipeline.lock -e . \
    && python -c "import pipeline.stages, pipeline.transform, pipeline.validation"
