/*
 * Listen addresses: "HOST:PORT", "[IPV6]:PORT", "HOST", ":PORT", "*:PORT".
 * Names are not resolved here (that is the listener's job, at bind time);
 * only the shape is checked, so a typo fails at configuration time.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

static int invalid(char **reason, char *text)
{
    if (reason)
        *reason = text;
    else
        free(text);
    return -EINVAL;
}

/* A port number 0-65535 (0: the kernel picks one) or a service name ("nbd"), which starts with a letter. */
static bool port_valid(const char *port)
{
    if (port[0] == '\0')
        return false;
    if (isdigit((unsigned char)port[0])) {
        if (strspn(port, "0123456789") != strlen(port) || strlen(port) > 5)
            return false;
        return strtoul(port, NULL, 10) <= 65535;
    }
    if (!isalpha((unsigned char)port[0]))
        return false;
    for (const char *c = port; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_')
            return false;
    return true;
}

/* A host name or IPv4 address; "" and "*" mean any address. */
static bool host_valid(const char *host)
{
    if (strcmp(host, "*") == 0)
        return true;
    for (const char *c = host; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '-' && *c != '.' && *c != '_')
            return false;
    return true;
}

/* IPv6 literal, optionally with a zone ("fe80::1%eth0"). */
static bool ipv6_valid(const char *host)
{
    char address[INET6_ADDRSTRLEN + 1];
    size_t length = strcspn(host, "%");
    if (length >= sizeof(address))
        return false;
    memcpy(address, host, length);
    address[length] = '\0';
    if (host[length] == '%' && host[length + 1] == '\0')
        return false;
    struct in6_addr parsed;
    return inet_pton(AF_INET6, address, &parsed) == 1;
}

int listen_address_parse_reason(const char *text, const char *default_port,
                                struct listen_address *out, char **reason)
{
    if (reason)
        *reason = NULL;
    char default_number[8];
    if (!default_port) {
        snprintf(default_number, sizeof(default_number), "%d", LUNA_NBD_DEFAULT_PORT);
        default_port = default_number;
    }
    if (!text || text[0] == '\0')
        return invalid(reason, config_printf("empty address (expected ADDR:PORT)"));

    const char *host_start = text;
    size_t host_length;
    const char *port = NULL;
    bool bracketed = text[0] == '[';
    if (bracketed) {
        const char *close = strchr(text, ']');
        if (!close)
            return invalid(reason, config_printf("invalid address '%s' (missing ']')", text));
        host_start = text + 1;
        host_length = (size_t)(close - host_start);
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return invalid(reason, config_printf("invalid address '%s' (expected [IPV6]:PORT)", text));
    } else {
        const char *colon = strchr(text, ':');
        if (colon && strchr(colon + 1, ':')) {
            /* Several colons and no brackets: a bare IPv6 address, default port. */
            host_length = strlen(text);
        } else {
            host_length = colon ? (size_t)(colon - text) : strlen(text);
            if (colon)
                port = colon + 1;
        }
    }
    if (!port)
        port = default_port;

    char *host = strndup(host_start, host_length);
    if (!host)
        return -ENOMEM;
    bool ipv6 = bracketed || strchr(host, ':');
    if (ipv6 ? !ipv6_valid(host) : !host_valid(host)) {
        int ret = invalid(reason, config_printf("invalid address '%s' (bad host '%s')", text, host));
        free(host);
        return ret;
    }
    if (!port_valid(port)) {
        free(host);
        return invalid(reason, config_printf("invalid address '%s' (bad port '%s': expected 0 to "
                                             "65535 or a service name)",
                                             text, port));
    }
    char *port_copy = strdup(port);
    if (!port_copy) {
        free(host);
        return -ENOMEM;
    }
    *out = (struct listen_address){.host = host, .port = port_copy};
    return 0;
}

int listen_address_parse(const char *text, const char *default_port, struct listen_address *out)
{
    return listen_address_parse_reason(text, default_port, out, NULL);
}

void listen_address_clear(struct listen_address *address)
{
    free(address->host);
    free(address->port);
    address->host = NULL;
    address->port = NULL;
}
