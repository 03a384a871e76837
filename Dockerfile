FROM python:3.11-slim-bookworm

# WeasyPrint needs Pango; fonts for the PDF invoices.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 \
       libharfbuzz-subset0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY agency agency
COPY tracking tracking
COPY billing billing
RUN pip install --no-cache-dir .
COPY . .
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput

RUN useradd --create-home clientmeter && mkdir -p /app/media /app/private \
    && chown clientmeter /app/media /app/private
USER clientmeter
EXPOSE 8000
CMD ["bin/web"]
