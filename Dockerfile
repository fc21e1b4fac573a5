# The proxy image: runtime dependencies only, started with the production command.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY proxy ./proxy
COPY gunicorn.conf.py .env ./
EXPOSE 8080 6380
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
